package vhostnet

import (
	"encoding/binary"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vringState mirrors struct vhost_vring_state { unsigned int index, num; }.
type vringState struct {
	Index uint32
	Num   uint32
}

// vringFile mirrors struct vhost_vring_file { unsigned int index; int fd; }.
type vringFile struct {
	Index uint32
	FD    int32
}

// vringAddr mirrors struct vhost_vring_addr: index and flags, then four
// 64-bit addresses (no padding: the u64s start at offset 8).
type vringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

// vhostIoctlPtr issues one ioctl whose argument is a pointer to *arg.
func vhostIoctlPtr[T any](fd int, req uintptr, arg *T) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(arg)))
	runtime.KeepAlive(arg)
	if e != 0 {
		return e
	}
	return nil
}

// vhostIoctlNone issues an ioctl without argument.
func vhostIoctlNone(fd int, req uintptr) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, 0)
	if e != 0 {
		return e
	}
	return nil
}

// encodeVhostMemory lays out struct vhost_memory { __u32 nregions, padding;
// struct vhost_memory_region regions[]; } with each region as
// { __u64 guest_phys_addr, memory_size, userspace_addr, flags_padding; }.
func encodeVhostMemory(regions []MemoryRegion) []uint64 {
	// A []uint64 keeps the buffer 8-aligned, as the C struct is.
	buf := make([]uint64, (sizeofVhostMemory+sizeofVhostMemRegion*len(regions))/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*8)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(regions)))
	for i, r := range regions {
		off := sizeofVhostMemory + sizeofVhostMemRegion*i
		binary.NativeEndian.PutUint64(b[off:], r.GPA)
		binary.NativeEndian.PutUint64(b[off+8:], r.Size)
		binary.NativeEndian.PutUint64(b[off+16:], r.UserAddr)
	}
	return buf
}

// vhostSetMemTableIoctl passes the encoded table to VHOST_SET_MEM_TABLE.
func vhostSetMemTableIoctl(fd int, buf []uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), vhostSetMemTable, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(buf)
	if e != 0 {
		return e
	}
	return nil
}
