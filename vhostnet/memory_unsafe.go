package vhostnet

import (
	"os"
	"unsafe"
)

// SharedRegion describes guest RAM that this process maps at mem (a
// MAP_SHARED mapping of file starting at fileOffset) and the guest sees at
// gpa. The user address is mem's address: it is what vhost backends
// translate ring addresses with, so mem must stay mapped while any backend
// uses the region.
func SharedRegion(gpa uint64, mem []byte, file *os.File, fileOffset uint64) MemoryRegion {
	var addr uint64
	if len(mem) > 0 {
		addr = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	}
	return MemoryRegion{GPA: gpa, Size: uint64(len(mem)), UserAddr: addr, File: file, FileOffset: fileOffset}
}
