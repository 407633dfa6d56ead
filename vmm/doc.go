// Package vmm is govmm's composition root: it turns a validated Config into
// a running Machine (guest memory, KVM VM and vCPUs, legacy devices, virtio
// devices) and runs it until the guest or the caller stops it.
//
// The flow is deliberately linear: Config (pure, validated) -> guest memory
// image built by package boot (pure) -> KVM VM and vCPUs -> one goroutine
// per vCPU, each locked to its OS thread, dispatching exits through the
// port-I/O and MMIO buses of package mmio. No device logic lives here.
package vmm
