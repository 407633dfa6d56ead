// Package boot builds the guest-memory image a 64-bit x86 kernel expects
// to find when its first instruction runs, and the vCPU state to run it
// with.
//
// Why a package of its own: everything a kernel sees at entry (where it
// was loaded, the zero page with its e820 map and command line, the initrd,
// the identity page tables and GDT of the Linux 64-bit boot protocol, the
// MP table that tells it about CPUs and the IOAPIC) is a pure function of
// the kernel file and a small Config. Keeping it free of KVM lets every
// byte be checked by ordinary tests on a byte slice, and lets a fuzzer feed
// it arbitrary kernel files: a bad file must produce an error, never a
// panic or a write outside guest memory.
//
// Two kernel formats are accepted:
//   - ELF64 executables for x86-64 (a Linux vmlinux, or the project's tiny
//     test kernels). PT_LOAD segments go to their physical addresses; a Xen
//     PVH entry note, if present, is reported but not used.
//   - bzImage files, per the Linux x86 boot protocol 2.12 or later, entered
//     at the 64-bit entry point (load address + 0x200).
//
// Both are entered the same way: long mode with paging on, RSI pointing at
// the zero page, interrupts off. The guest-physical layout is drawn once,
// in layout.go.
package boot
