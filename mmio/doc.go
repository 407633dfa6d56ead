// Package mmio holds govmm's two I/O buses (memory-mapped and port I/O) and
// the handful of legacy port devices a PC guest expects to find.
//
// When a vCPU exits on an MMIO or port access, the VMM hands the address and
// the access bytes to a Bus; the Bus finds the one device whose range holds
// the whole access and calls it with an offset relative to the range base.
// Keeping this lookup in one ordered, non-overlapping range map (instead of a
// switch over addresses in the exit loop) is what lets devices be added and
// removed without touching the vCPU loop, and makes overlaps an error at
// Insert time rather than a silent mis-dispatch at run time.
//
// Buses are read-mostly: every guest access takes the read lock for one
// binary search, and device code always runs after the bus lock is released,
// so a device may block, call back into the VMM, or even insert and remove
// ranges without deadlocking. Each device guards its own state.
//
// The legacy devices are just enough PC for Linux and for govmm's tiny test
// kernels:
//
//   - Serial: a 16550A UART (COM1 at port 0x3F8, IRQ 4), the console.
//   - DebugExit: a port whose written byte becomes the VMM's exit status.
//   - I8042: the keyboard controller, for its CPU-reset command (how Linux
//     reboots with reboot=k) and a probe that does not stall.
//   - Sink: a port that swallows writes and reads a constant (POST code port
//     0x80 and similar).
//
// Everything here is pure Go and has no KVM dependency: the package is
// tested by driving the buses and devices directly. Guest accesses never
// panic the process, whatever their address, size or order; fuzz targets
// check that.
package mmio
