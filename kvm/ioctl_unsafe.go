package kvm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlError is returned by every failing KVM ioctl: it names the request
// and wraps the errno so errors.Is(err, unix.EEXIST) works.
type ioctlError struct {
	op    string
	errno unix.Errno
}

func (e *ioctlError) Error() string { return fmt.Sprintf("%s: %v", e.op, e.errno) }
func (e *ioctlError) Unwrap() error { return e.errno }

// ioctl issues a request whose argument is a plain integer, retrying on
// EINTR (KVM_RUN is the only request that must not be retried; it has its
// own path).
func ioctl(fd int, op string, req, arg uintptr) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, &ioctlError{op: op, errno: errno}
		}
		return r, nil
	}
}

// ioctlPtr issues a request whose argument points at a struct mirror.
func ioctlPtr[T any](fd int, op string, req uintptr, arg *T) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(arg)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, &ioctlError{op: op, errno: errno}
		}
		return r, nil
	}
}

// ioctlBuf issues a request whose argument is a variable-length buffer
// (kvm_cpuid2, kvm_msrs).
func ioctlBuf(fd int, op string, req uintptr, buf []byte) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&buf[0])))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, &ioctlError{op: op, errno: errno}
		}
		return r, nil
	}
}

// sliceAddr returns the host virtual address of b's first byte, for
// KVM_SET_USER_MEMORY_REGION. The caller keeps b mapped for as long as KVM
// may use it.
func sliceAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// cpuidToBytes and cpuidFromBytes convert between []CPUIDEntry and the
// kvm_cpuid2 wire layout.
func cpuidToBytes(entries []CPUIDEntry) []byte {
	buf := make([]byte, sizeofCPUIDHeader+len(entries)*sizeofCPUIDEntry)
	(*cpuidHeader)(unsafe.Pointer(&buf[0])).NEnt = uint32(len(entries))
	if len(entries) > 0 {
		copy(buf[sizeofCPUIDHeader:], unsafe.Slice((*byte)(unsafe.Pointer(&entries[0])), len(entries)*sizeofCPUIDEntry))
	}
	return buf
}

func cpuidFromBytes(buf []byte) []CPUIDEntry {
	n := int((*cpuidHeader)(unsafe.Pointer(&buf[0])).NEnt)
	if max := (len(buf) - sizeofCPUIDHeader) / sizeofCPUIDEntry; n > max {
		n = max
	}
	out := make([]CPUIDEntry, n)
	if n > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), n*sizeofCPUIDEntry), buf[sizeofCPUIDHeader:])
	}
	return out
}

func msrsToBytes(entries []MSREntry) []byte {
	buf := make([]byte, sizeofMSRsHeader+len(entries)*sizeofMSREntry)
	(*msrsHeader)(unsafe.Pointer(&buf[0])).NMSRs = uint32(len(entries))
	if len(entries) > 0 {
		copy(buf[sizeofMSRsHeader:], unsafe.Slice((*byte)(unsafe.Pointer(&entries[0])), len(entries)*sizeofMSREntry))
	}
	return buf
}

func msrsFromBytes(buf []byte, entries []MSREntry) {
	if len(entries) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&entries[0])), len(entries)*sizeofMSREntry), buf[sizeofMSRsHeader:])
	}
}

func msrIndexList(buf []byte) []uint32 {
	n := int(*(*uint32)(unsafe.Pointer(&buf[0])))
	if max := (len(buf) - 4) / 4; n > max {
		n = max
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = *(*uint32)(unsafe.Pointer(&buf[4+4*i]))
	}
	return out
}
