// Package kvmtest provides a fake of the kernel's KVM_IOEVENTFD, so that
// code registering ioeventfds (the kvm.IoEventSpace, virtio transports,
// vhost attach paths) can be tested without /dev/kvm, including the failure
// paths a real kernel only produces under pressure.
//
// The fake follows the rules of the kernel's virt/kvm/eventfd.c rather than
// those of any caller: EINVAL for a bad length or flags, EBADF for a closed
// eventfd, EEXIST from the collision check (which ignores the eventfd),
// ENOENT for the deassign of an unknown (space, address, length, datamatch,
// eventfd) registration. It can fail any chosen call with any error, to
// drive rollbacks, and has a counting mode without checks for benchmarks.
//
// Beside the fake, two helpers for tests that use the real kernel: NewVM
// (a bare VM to check the same rules against) and NewEventFD, both
// released when the test ends.
package kvmtest
