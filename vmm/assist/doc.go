// Package assist completes the few guest instructions that KVM's
// instruction emulator rejects on hosts where it runs guest kernel code.
//
// Why it exists: on a host without hardware virtualization of the guest's
// supervisor mode (a paging-based nested KVM, for instance), every guest
// instruction at CPL0 goes through KVM's software emulator. That emulator
// does not implement int3, clac, stac or popcnt, so KVM_RUN stops with
// KVM_EXIT_INTERNAL_ERROR (suberror 1, emulation failure) where real
// hardware would simply have executed them. A Linux guest meets thousands
// of these while it boots. The VMM reads the bytes at RIP, hands them to
// Apply, writes back the registers Apply returns (and injects #BP when it
// asks), and resumes the vCPU.
//
// Everything here is pure: Decode and Apply take instruction bytes and a
// register snapshot and return the new state, reading guest memory only
// through the Memory interface, so the whole package is tested without
// KVM. Instruction bytes come from the guest: nothing a guest can place at
// RIP makes this package panic; what it does not recognise is reported as
// an *UnsupportedError that names the bytes.
//
// Only 64-bit mode is decoded (CS.L=1): RegsFromKVM refuses any other mode,
// because the same bytes mean different instructions there.
package assist
