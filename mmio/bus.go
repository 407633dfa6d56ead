package mmio

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Device handles accesses relative to the base of the range it was inserted
// at. len(data) is the access size (1, 2, 4 or 8 usually; never 0 when called
// by a Bus). Read fills data; Write consumes it.
//
// A device's methods may be called concurrently from several vCPU goroutines
// and must guard their own state. They must not panic on any offset or size:
// both come from the guest.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// Errors reported by Bus. Test for them with errors.Is.
var (
	// ErrOverlap: Insert was given a range that shares an address with a
	// range already on the bus. The error is an *OverlapError.
	ErrOverlap = errors.New("overlapping range")
	// ErrUnmapped: no device covers the whole access. The error is an
	// *UnmappedError.
	ErrUnmapped = errors.New("unmapped access")
	// ErrInvalidRange: Insert was given an empty range, one that runs past
	// the end of the 64-bit address space, or a nil device.
	ErrInvalidRange = errors.New("invalid range")
	// ErrNotFound: Remove was given a base no range starts at.
	ErrNotFound = errors.New("no range at base")
)

// Range is an address range [Base, Base+Size) with Size > 0. It may end at
// the very top of the address space (last byte 0xffff_ffff_ffff_ffff).
type Range struct {
	Base, Size uint64
}

// Last returns the range's last address (inclusive), so ranges that end at
// 2^64 need no overflowing end address.
func (r Range) Last() uint64 { return r.Base + (r.Size - 1) }

// Contains reports whether the access of n bytes at addr lies entirely in r.
// An access of 0 bytes is contained if addr is.
func (r Range) Contains(addr uint64, n int) bool {
	if addr < r.Base || addr > r.Last() {
		return false
	}
	if n <= 1 {
		return true
	}
	// Bytes left in r from addr on, minus one, cannot overflow.
	return uint64(n-1) <= r.Last()-addr
}

func (r Range) overlaps(o Range) bool {
	return r.Base <= o.Last() && o.Base <= r.Last()
}

// String formats the range with an inclusive end, e.g. "[0x3f8-0x3ff]".
func (r Range) String() string {
	return fmt.Sprintf("[%#x-%#x]", r.Base, r.Last())
}

// OverlapError is returned by Insert when the new range overlaps one already
// on the bus. errors.Is(err, ErrOverlap) is true.
type OverlapError struct {
	Bus      string
	New      Range
	Existing Range
}

func (e *OverlapError) Error() string {
	return fmt.Sprintf("%s bus: insert %v: overlaps %v", e.Bus, e.New, e.Existing)
}

// Is makes errors.Is(err, ErrOverlap) true.
func (e *OverlapError) Is(target error) bool { return target == ErrOverlap }

// UnmappedError is returned by Bus.Read and Bus.Write when no device covers
// the whole access (including an access that starts inside a range and runs
// past its end). errors.Is(err, ErrUnmapped) is true.
type UnmappedError struct {
	Bus   string
	Addr  uint64
	Len   int
	Write bool
}

func (e *UnmappedError) Error() string {
	op := "read"
	if e.Write {
		op = "write"
	}
	return fmt.Sprintf("%s bus: %s of %d bytes at %#x: no device covers it", e.Bus, op, e.Len, e.Addr)
}

// Is makes errors.Is(err, ErrUnmapped) true.
func (e *UnmappedError) Is(target error) bool { return target == ErrUnmapped }

type busEntry struct {
	Range
	dev Device
}

// Bus dispatches accesses to devices by address. Ranges are kept sorted by
// base and never overlap, so a lookup is one binary search. A Bus is safe for
// concurrent use: accesses take a read lock, Insert and Remove the write
// lock, and devices are always called after the lock is released.
//
// Because the device is called outside the lock, an access that looked a
// device up just before Remove returned may still run on it afterwards;
// devices that care must handle that themselves.
type Bus struct {
	name    string
	mu      sync.RWMutex
	entries []busEntry // sorted by Base, non-overlapping
}

// NewBus returns an empty bus. The name (e.g. "mmio", "pio") appears in
// errors.
func NewBus(name string) *Bus {
	return &Bus{name: name}
}

// Name returns the name given to NewBus.
func (b *Bus) Name() string { return b.name }

// Insert maps d at [base, base+size). It fails with ErrInvalidRange if size
// is 0, the range runs past the top of the 64-bit address space or d is nil,
// and with an *OverlapError (ErrOverlap) if any address is already mapped.
func (b *Bus) Insert(base, size uint64, d Device) error {
	if size == 0 {
		return fmt.Errorf("%s bus: insert at %#x: size 0: %w", b.name, base, ErrInvalidRange)
	}
	if size-1 > ^uint64(0)-base {
		return fmt.Errorf("%s bus: insert at %#x size %#x: end overflows 64 bits: %w", b.name, base, size, ErrInvalidRange)
	}
	if d == nil {
		return fmt.Errorf("%s bus: insert at %#x: nil device: %w", b.name, base, ErrInvalidRange)
	}
	r := Range{Base: base, Size: size}

	b.mu.Lock()
	defer b.mu.Unlock()
	// i: first entry starting after base. Only entries i-1 and i can
	// overlap r, because the entries are sorted and disjoint.
	i := sort.Search(len(b.entries), func(j int) bool { return b.entries[j].Base > base })
	if i > 0 && b.entries[i-1].overlaps(r) {
		return &OverlapError{Bus: b.name, New: r, Existing: b.entries[i-1].Range}
	}
	if i < len(b.entries) && b.entries[i].overlaps(r) {
		return &OverlapError{Bus: b.name, New: r, Existing: b.entries[i].Range}
	}
	b.entries = append(b.entries, busEntry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = busEntry{Range: r, dev: d}
	return nil
}

// Remove unmaps the range that starts at base. It fails with ErrNotFound if
// no range starts there (an address inside a range is not enough).
func (b *Bus) Remove(base uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(j int) bool { return b.entries[j].Base >= base })
	if i == len(b.entries) || b.entries[i].Base != base {
		return fmt.Errorf("%s bus: remove %#x: %w", b.name, base, ErrNotFound)
	}
	copy(b.entries[i:], b.entries[i+1:])
	b.entries[len(b.entries)-1] = busEntry{}
	b.entries = b.entries[:len(b.entries)-1]
	return nil
}

// Ranges returns a snapshot of the mapped ranges in address order.
func (b *Bus) Ranges() []Range {
	b.mu.RLock()
	defer b.mu.RUnlock()
	rs := make([]Range, len(b.entries))
	for i, e := range b.entries {
		rs[i] = e.Range
	}
	return rs
}

// lookup returns the device covering the whole access and its base.
func (b *Bus) lookup(addr uint64, n int) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(j int) bool { return b.entries[j].Base > addr })
	if i == 0 {
		return nil, 0, false
	}
	e := b.entries[i-1]
	if !e.Contains(addr, n) {
		return nil, 0, false
	}
	return e.dev, e.Base, true
}

// Read dispatches a read of len(data) bytes at addr to the device covering
// it. If none does, Read fills data with 0xff (what a read of an empty bus
// returns on a PC) and returns an *UnmappedError. A zero-length read does
// nothing and returns nil if addr is mapped.
func (b *Bus) Read(addr uint64, data []byte) error {
	d, base, ok := b.lookup(addr, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		return &UnmappedError{Bus: b.name, Addr: addr, Len: len(data)}
	}
	if len(data) > 0 {
		d.Read(addr-base, data)
	}
	return nil
}

// Write dispatches a write of data at addr to the device covering it, or
// returns an *UnmappedError if none does. A zero-length write does nothing
// and returns nil if addr is mapped.
func (b *Bus) Write(addr uint64, data []byte) error {
	d, base, ok := b.lookup(addr, len(data))
	if !ok {
		return &UnmappedError{Bus: b.name, Addr: addr, Len: len(data), Write: true}
	}
	if len(data) > 0 {
		d.Write(addr-base, data)
	}
	return nil
}
