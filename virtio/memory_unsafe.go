package virtio

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Ordered access to guest memory.
//
// The guest's vCPUs read and write the rings concurrently with the device,
// so the split ring needs (virtio 1.x, "Supplying Buffers to The Device" and
// "Receiving Used Buffers"):
//
//  1. Pop: load avail.idx, then ACQUIRE, then read avail.ring[] and the
//     descriptors: entries the driver wrote before bumping idx must be seen.
//  2. Push: write used.ring[] elements, then RELEASE, then store used.idx:
//     the driver must never see an index covering unwritten elements.
//  3. Interrupt suppression (NeedsInterrupt): store used.idx, then a FULL
//     barrier (store->load), then load used_event or avail.flags. Without
//     it the load may be satisfied before the store is visible, and the
//     device and driver can each decide the other will act: a lost
//     interrupt.
//  4. Kick suppression (EnableNotification): store avail_event (or clear
//     used.flags), then a FULL barrier, then reload avail.idx to catch
//     buffers added before the driver could see the new avail_event.
//
// Go has no 16-bit atomics and no exposed fence, so:
//   - Index loads and stores are single 16-bit accesses through a *uint16
//     (one instruction; naturally aligned, hence single-copy atomic on
//     every Go target). Alignment is guaranteed because Queue.Init checks
//     ring alignment and NewGuestMemory checks that each region's host
//     address is congruent to its GPA modulo 8.
//   - Acquire loads use atomic.LoadUint32 on the aligned 32-bit word that
//     contains the index when that word lies inside the slice (an acquire
//     load on every target); otherwise a plain single load followed by
//     Fence.
//   - Release stores are Fence followed by a plain single store.
//   - Fence is an atomic read-modify-write on a stack word: LOCK-prefixed on
//     amd64 (a full barrier), an acquire-release atomic on arm64 (ordered
//     like a full barrier for surrounding accesses). The compiler never
//     moves memory accesses across a sync/atomic operation.
//
// Multi-byte fields are little-endian in guest memory; the conversions
// below are no-ops on little-endian hosts.

// Fence is a full memory barrier: every memory access before it (by this
// goroutine) is ordered before every access after it, stores before loads
// included.
func Fence() {
	var w uint32
	atomic.AddUint32(&w, 1)
}

// hostAligned reports whether b's host address is congruent to gpa modulo 8.
func hostAligned(b []byte, gpa uint64) bool {
	if len(b) == 0 {
		return true
	}
	return (uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))-gpa)%8 == 0
}

// u16Ptr returns a pointer to b[off:off+2] and whether it is 2-aligned on
// the host. The caller has bounds-checked off.
func u16Ptr(b []byte, off int) (*uint16, bool) {
	p := unsafe.Pointer(&b[off:][:2][0]) // bounds check: two bytes at off
	return (*uint16)(p), uintptr(p)%2 == 0
}

func le16(native uint16) uint16 {
	var t [2]byte
	binary.NativeEndian.PutUint16(t[:], native)
	return binary.LittleEndian.Uint16(t[:])
}

func native16(le uint16) uint16 {
	var t [2]byte
	binary.LittleEndian.PutUint16(t[:], le)
	return binary.NativeEndian.Uint16(t[:])
}

// loadU16 loads the little-endian uint16 at b[off] with one access when the
// host address is aligned (byte loads otherwise). No ordering.
func loadU16(b []byte, off int) uint16 {
	p, aligned := u16Ptr(b, off)
	if !aligned {
		return binary.LittleEndian.Uint16(b[off:])
	}
	return le16(*p)
}

// storeU16 stores v little-endian at b[off] with one access when aligned.
// No ordering.
func storeU16(b []byte, off int, v uint16) {
	p, aligned := u16Ptr(b, off)
	if !aligned {
		binary.LittleEndian.PutUint16(b[off:], v)
		return
	}
	*p = native16(v)
}

// loadU16Acquire loads the little-endian uint16 at b[off] and orders later
// accesses after it.
func loadU16Acquire(b []byte, off int) uint16 {
	p, aligned := u16Ptr(b, off)
	if aligned {
		// The aligned 32-bit word holding the index starts 0 or 2 bytes
		// before it; use it if it is inside b.
		back := int(uintptr(unsafe.Pointer(p)) % 4)
		if off >= back && off-back+4 <= len(b) {
			w := atomic.LoadUint32((*uint32)(unsafe.Add(unsafe.Pointer(p), -back)))
			var t [4]byte
			binary.NativeEndian.PutUint32(t[:], w)
			return binary.LittleEndian.Uint16(t[back:])
		}
	}
	v := loadU16(b, off)
	Fence()
	return v
}

// storeU16Release orders earlier accesses before storing v little-endian at
// b[off].
func storeU16Release(b []byte, off int, v uint16) {
	Fence()
	storeU16(b, off, v)
}
