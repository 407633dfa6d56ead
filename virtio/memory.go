package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Errors of guest-memory access. Test them with errors.Is.
var (
	// ErrOutOfBounds: the access is not entirely inside guest memory
	// (including address arithmetic that would wrap around 2^64).
	ErrOutOfBounds = errors.New("guest memory access out of bounds")
	// ErrMisaligned: an ordered (ring index) access at an address that is
	// not a multiple of its size.
	ErrMisaligned = errors.New("misaligned guest memory access")
	// ErrBadRegion: NewGuestMemory was given an empty, overflowing,
	// misaligned or overlapping region.
	ErrBadRegion = errors.New("invalid guest memory region")
)

// Region is one contiguous piece of guest-physical memory: the guest sees
// Mem at [GPA, GPA+len(Mem)). In the VMM, Mem is (part of) the mmap of the
// memfd that also backs the KVM memory slot.
type Region struct {
	GPA uint64
	Mem []byte
}

// GuestMemory maps guest-physical addresses to host memory. It is
// immutable after NewGuestMemory and safe for concurrent use; the bytes it
// points at are shared with the guest, which may change them at any time.
//
// Every accessor is bounds-checked and returns ErrOutOfBounds (wrapped in an
// *AccessError) instead of panicking, whatever the address and length.
type GuestMemory struct {
	regions []Region // sorted by GPA, non-empty, non-overlapping
}

// AccessError describes a failed guest-memory access. It unwraps to
// ErrOutOfBounds or ErrMisaligned.
type AccessError struct {
	Op  string // "slice", "read", "write", "load", "store"
	GPA uint64
	Len uint64
	Err error
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("guest memory %s %#x+%d: %v", e.Op, e.GPA, e.Len, e.Err)
}

func (e *AccessError) Unwrap() error { return e.Err }

func accessErr(op string, gpa, n uint64, err error) error {
	return &AccessError{Op: op, GPA: gpa, Len: n, Err: err}
}

// NewGuestMemory builds a GuestMemory from regions, which must be non-empty,
// must not overlap, must not run past 2^64, and must have their host base
// address congruent to their GPA modulo 8 (true for page-aligned mmaps and
// GPAs; ring indexes are then naturally aligned on the host too, which the
// ordered accessors need). The region slices are used, not copied.
func NewGuestMemory(regions ...Region) (*GuestMemory, error) {
	if len(regions) == 0 {
		return nil, fmt.Errorf("new guest memory: no regions: %w", ErrBadRegion)
	}
	rs := slices.Clone(regions)
	for _, r := range rs {
		n := uint64(len(r.Mem))
		if n == 0 {
			return nil, fmt.Errorf("new guest memory: region at %#x is empty: %w", r.GPA, ErrBadRegion)
		}
		if r.GPA > ^uint64(0)-n {
			return nil, fmt.Errorf("new guest memory: region %#x+%#x runs past 2^64: %w", r.GPA, n, ErrBadRegion)
		}
		if !hostAligned(r.Mem, r.GPA) {
			return nil, fmt.Errorf("new guest memory: region at %#x: host address not congruent to the GPA modulo 8: %w", r.GPA, ErrBadRegion)
		}
	}
	slices.SortFunc(rs, func(a, b Region) int {
		switch {
		case a.GPA < b.GPA:
			return -1
		case a.GPA > b.GPA:
			return 1
		}
		return 0
	})
	for i := 1; i < len(rs); i++ {
		prev, cur := rs[i-1], rs[i]
		if cur.GPA-prev.GPA < uint64(len(prev.Mem)) {
			return nil, fmt.Errorf("new guest memory: region %#x+%#x overlaps %#x+%#x: %w",
				cur.GPA, len(cur.Mem), prev.GPA, len(prev.Mem), ErrBadRegion)
		}
	}
	return &GuestMemory{regions: rs}, nil
}

// Regions returns a copy of the region list, sorted by GPA (the slices
// still alias guest memory). vhost backends use it to build their memory
// tables.
func (m *GuestMemory) Regions() []Region {
	return slices.Clone(m.regions)
}

// Size returns the total number of bytes of guest memory.
func (m *GuestMemory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.Mem))
	}
	return n
}

// find returns the region holding gpa and gpa's offset in it.
func (m *GuestMemory) find(gpa uint64) (*Region, uint64, bool) {
	rs := m.regions
	// Binary search for the last region starting at or below gpa.
	lo, hi := 0, len(rs)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if rs[mid].GPA <= gpa {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return nil, 0, false
	}
	r := &rs[lo-1]
	off := gpa - r.GPA
	if off >= uint64(len(r.Mem)) {
		return nil, 0, false
	}
	return r, off, true
}

// Slice returns the n bytes of guest memory at gpa as one host slice (its
// capacity is n, so appending never writes past it). The bytes must lie in
// a single region, and gpa itself must be inside guest memory even when n
// is 0. The slice aliases guest memory: the guest can change it at any time.
func (m *GuestMemory) Slice(gpa, n uint64) ([]byte, error) {
	r, off, ok := m.find(gpa)
	if !ok || n > uint64(len(r.Mem))-off {
		return nil, accessErr("slice", gpa, n, ErrOutOfBounds)
	}
	return r.Mem[off : off+n : off+n], nil
}

// AppendSlices appends to dst the host slices covering [gpa, gpa+n), one
// per region crossed (adjacent regions may be contiguous in guest-physical
// space but not on the host). n == 0 appends nothing and always succeeds.
// On error dst is returned unchanged.
func (m *GuestMemory) AppendSlices(dst [][]byte, gpa, n uint64) ([][]byte, error) {
	if n == 0 {
		return dst, nil
	}
	if gpa > ^uint64(0)-(n-1) {
		return dst, accessErr("slice", gpa, n, ErrOutOfBounds)
	}
	orig := len(dst)
	for n > 0 {
		r, off, ok := m.find(gpa)
		if !ok {
			return dst[:orig], accessErr("slice", gpa, n, ErrOutOfBounds)
		}
		k := min(n, uint64(len(r.Mem))-off)
		dst = append(dst, r.Mem[off:off+k:off+k])
		gpa += k // cannot wrap: checked above
		n -= k
	}
	return dst, nil
}

// check verifies that [gpa, gpa+n) is entirely guest memory, possibly
// across adjacent regions.
func (m *GuestMemory) check(op string, gpa, n uint64) error {
	if n == 0 {
		return nil
	}
	if gpa > ^uint64(0)-(n-1) {
		return accessErr(op, gpa, n, ErrOutOfBounds)
	}
	for a, left := gpa, n; left > 0; {
		r, off, ok := m.find(a)
		if !ok {
			return accessErr(op, gpa, n, ErrOutOfBounds)
		}
		k := min(left, uint64(len(r.Mem))-off)
		a += k
		left -= k
	}
	return nil
}

// Read copies len(dst) bytes of guest memory at gpa into dst. The range may
// span adjacent regions. Nothing is copied on error.
func (m *GuestMemory) Read(gpa uint64, dst []byte) error {
	if err := m.check("read", gpa, uint64(len(dst))); err != nil {
		return err
	}
	for len(dst) > 0 {
		r, off, _ := m.find(gpa)
		k := copy(dst, r.Mem[off:])
		dst = dst[k:]
		gpa += uint64(k)
	}
	return nil
}

// Write copies src into guest memory at gpa. The range may span adjacent
// regions. Nothing is written on error.
func (m *GuestMemory) Write(gpa uint64, src []byte) error {
	if err := m.check("write", gpa, uint64(len(src))); err != nil {
		return err
	}
	for len(src) > 0 {
		r, off, _ := m.find(gpa)
		k := copy(r.Mem[off:], src)
		src = src[k:]
		gpa += uint64(k)
	}
	return nil
}

// U16 loads a little-endian uint16 from gpa (plain access, any alignment).
func (m *GuestMemory) U16(gpa uint64) (uint16, error) {
	var b [2]byte
	if err := m.Read(gpa, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b[:]), nil
}

// U32 loads a little-endian uint32 from gpa (plain access, any alignment).
func (m *GuestMemory) U32(gpa uint64) (uint32, error) {
	var b [4]byte
	if err := m.Read(gpa, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// U64 loads a little-endian uint64 from gpa (plain access, any alignment).
func (m *GuestMemory) U64(gpa uint64) (uint64, error) {
	var b [8]byte
	if err := m.Read(gpa, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// PutU16 stores v little-endian at gpa (plain access, any alignment).
func (m *GuestMemory) PutU16(gpa uint64, v uint16) error {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	return m.Write(gpa, b[:])
}

// PutU32 stores v little-endian at gpa (plain access, any alignment).
func (m *GuestMemory) PutU32(gpa uint64, v uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return m.Write(gpa, b[:])
}

// PutU64 stores v little-endian at gpa (plain access, any alignment).
func (m *GuestMemory) PutU64(gpa uint64, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return m.Write(gpa, b[:])
}

// LoadU16Acquire loads the little-endian uint16 at gpa with one
// single-copy-atomic access, and orders every later memory access of this
// goroutine after it (acquire). gpa must be 2-aligned. Use it for indexes
// the guest publishes (avail.idx) before reading what they cover.
func (m *GuestMemory) LoadU16Acquire(gpa uint64) (uint16, error) {
	if gpa%2 != 0 {
		return 0, accessErr("load", gpa, 2, ErrMisaligned)
	}
	r, off, ok := m.find(gpa)
	if !ok || off+2 > uint64(len(r.Mem)) {
		return 0, accessErr("load", gpa, 2, ErrOutOfBounds)
	}
	return loadU16Acquire(r.Mem, int(off)), nil
}

// StoreU16Release stores v little-endian at gpa with one single-copy-atomic
// access, ordered after every earlier memory access of this goroutine
// (release). gpa must be 2-aligned. Use it to publish used.idx after
// writing the used elements.
func (m *GuestMemory) StoreU16Release(gpa uint64, v uint16) error {
	if gpa%2 != 0 {
		return accessErr("store", gpa, 2, ErrMisaligned)
	}
	r, off, ok := m.find(gpa)
	if !ok || off+2 > uint64(len(r.Mem)) {
		return accessErr("store", gpa, 2, ErrOutOfBounds)
	}
	storeU16Release(r.Mem, int(off), v)
	return nil
}
