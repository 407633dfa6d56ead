// Package hostprobe finds out what this host's KVM can do for govmm: which
// capabilities it offers, whether kernel vhost-net and TUN are there, and,
// most importantly, whether guest kernel code (CPL0) runs on the hardware
// or through KVM's instruction emulator.
//
// Why: some KVM hosts (a paging-based nested KVM on a CPU that shows
// neither vmx nor svm, for instance) run guest user code natively but
// emulate every guest kernel instruction, about a thousand times slower.
// Such a host still boots tiny kernels and can take Linux as far as
// starting init, but only if the VMM completes the instructions the
// emulator rejects and steers the guest away from features the emulator
// cannot run. No capability flag announces this, so MeasureSupervisorSpeed
// measures it: it times the same loop at CPL0 and at CPL3 in a throwaway
// VM. The VMM turns the answer into Quirks (QuirksFor, ApplyCPUIDQuirks);
// `govmm probe` prints the whole Report.
//
// Everything that decides (verdict, quirks, CPUID edits, /proc/cpuinfo
// parsing) is pure and tested without KVM; only Probe and
// MeasureSupervisorSpeed touch the host.
package hostprobe
