package virtio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// aligned returns an 8-aligned byte slice of n bytes (make's result is, for
// these sizes; checked so a test failure is not a mystery).
func aligned(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if !hostAligned(b, 0) {
		t.Fatalf("make([]byte, %d) is not 8-aligned", n)
	}
	return b
}

func TestNewGuestMemory(t *testing.T) {
	a, b := aligned(t, 0x1000), aligned(t, 0x1000)
	tests := []struct {
		name    string
		regions []Region
		wantErr bool
	}{
		{"none", nil, true},
		{"one", []Region{{0x1000, a}}, false},
		{"empty region", []Region{{0x1000, a[:0]}}, true},
		{"adjacent", []Region{{0x1000, a}, {0x2000, b}}, false},
		{"unsorted", []Region{{0x8000, b}, {0x1000, a}}, false},
		{"overlap", []Region{{0x1000, a}, {0x1ff8, b}}, true},
		{"overlap unsorted", []Region{{0x1ff8, b}, {0x1000, a}}, true},
		{"same base", []Region{{0x1000, a}, {0x1000, b}}, true},
		{"contained", []Region{{0x1000, a}, {0x1800, b[:8]}}, true},
		{"runs past 2^64", []Region{{math.MaxUint64 - 0x7ff, a}}, true},
		{"ends at 2^64", []Region{{math.MaxUint64 - 0xfff, a}}, true},
		{"ends just below 2^64", []Region{{math.MaxUint64 - 0x1007, a}}, false},
		{"host misaligned", []Region{{0x1000, a[1:]}}, true},
		{"host offset matches gpa", []Region{{0x1001, a[1:]}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewGuestMemory(tt.regions...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrBadRegion) {
					t.Errorf("err = %v, not ErrBadRegion", err)
				}
				return
			}
			var want uint64
			for _, r := range tt.regions {
				want += uint64(len(r.Mem))
			}
			if m.Size() != want {
				t.Errorf("Size = %d, want %d", m.Size(), want)
			}
			rs := m.Regions()
			for i := 1; i < len(rs); i++ {
				if rs[i-1].GPA >= rs[i].GPA {
					t.Errorf("Regions not sorted: %#x then %#x", rs[i-1].GPA, rs[i].GPA)
				}
			}
		})
	}
}

// twoRegions: [0x1000,0x2000) and [0x2000,0x3000) adjacent, [0x8000,0x9000)
// after a hole.
func twoRegions(t *testing.T) (*GuestMemory, [][]byte) {
	t.Helper()
	bufs := [][]byte{aligned(t, 0x1000), aligned(t, 0x1000), aligned(t, 0x1000)}
	m, err := NewGuestMemory(Region{0x1000, bufs[0]}, Region{0x2000, bufs[1]}, Region{0x8000, bufs[2]})
	if err != nil {
		t.Fatal(err)
	}
	return m, bufs
}

func TestSlice(t *testing.T) {
	m, bufs := twoRegions(t)
	bufs[0][0x10] = 0xaa
	tests := []struct {
		name    string
		gpa, n  uint64
		wantErr bool
	}{
		{"start", 0x1000, 16, false},
		{"whole region", 0x1000, 0x1000, false},
		{"last byte", 0x2fff, 1, false},
		{"zero length inside", 0x1800, 0, false},
		{"crosses adjacent regions", 0x1ff0, 0x20, true},
		{"below memory", 0xfff, 1, true},
		{"straddles low edge", 0xff0, 0x20, true},
		{"in hole", 0x4000, 1, true},
		{"past region end", 0x8ff0, 0x11, true},
		{"zero length at end", 0x9000, 0, true},
		{"huge length", 0x1000, math.MaxUint64, true},
		{"wraps", math.MaxUint64, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := m.Slice(tt.gpa, tt.n)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Slice(%#x, %d) err = %v, want error %v", tt.gpa, tt.n, err, tt.wantErr)
			}
			if err != nil {
				var ae *AccessError
				if !errors.Is(err, ErrOutOfBounds) || !errors.As(err, &ae) || ae.GPA != tt.gpa {
					t.Errorf("err = %#v, want *AccessError for %#x wrapping ErrOutOfBounds", err, tt.gpa)
				}
				return
			}
			if uint64(len(s)) != tt.n || uint64(cap(s)) != tt.n {
				t.Errorf("len %d cap %d, want %d", len(s), cap(s), tt.n)
			}
		})
	}
	s, _ := m.Slice(0x1010, 1)
	if s[0] != 0xaa {
		t.Errorf("Slice(0x1010) = %#x, does not alias region memory", s[0])
	}
}

func TestAppendSlices(t *testing.T) {
	m, _ := twoRegions(t)
	got, err := m.AppendSlices(nil, 0x1ff0, 0x20)
	if err != nil || len(got) != 2 || len(got[0]) != 0x10 || len(got[1]) != 0x10 {
		t.Fatalf("across adjacent regions: %d slices, err %v", len(got), err)
	}
	prev := [][]byte{{1}}
	got, err = m.AppendSlices(prev, 0x2ff0, 0x20) // runs into the hole
	if !errors.Is(err, ErrOutOfBounds) || len(got) != 1 {
		t.Fatalf("into hole: %d slices, err %v; want the input back and ErrOutOfBounds", len(got), err)
	}
	if got, err = m.AppendSlices(nil, math.MaxUint64, 0); err != nil || len(got) != 0 {
		t.Errorf("zero length: %v, %v", got, err)
	}
	if _, err = m.AppendSlices(nil, math.MaxUint64-1, 4); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("wrapping: err %v", err)
	}
}

func TestReadWriteAcrossRegions(t *testing.T) {
	m, bufs := twoRegions(t)
	src := []byte("0123456789abcdefghij")
	if err := m.Write(0x1ff6, src); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bufs[0][0xff6:], src[:10]) || !bytes.Equal(bufs[1][:10], src[10:]) {
		t.Errorf("write did not split at the region boundary")
	}
	dst := make([]byte, len(src))
	if err := m.Read(0x1ff6, dst); err != nil || !bytes.Equal(dst, src) {
		t.Errorf("read back %q, %v", dst, err)
	}
	// A write running into the hole writes nothing.
	before := bytes.Clone(bufs[1][0xff0:])
	if err := m.Write(0x2ff0, make([]byte, 0x20)); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("write into hole: %v", err)
	}
	if !bytes.Equal(bufs[1][0xff0:], before) {
		t.Errorf("failed write modified memory")
	}
	if err := m.Read(0x8ff8, make([]byte, 9)); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("read past end: %v", err)
	}
}

func TestScalarAccessors(t *testing.T) {
	m, bufs := twoRegions(t)
	if err := m.PutU16(0x1001, 0xbeef); err != nil {
		t.Fatal(err)
	}
	if err := m.PutU32(0x1ffe, 0x11223344); err != nil { // spans two regions
		t.Fatal(err)
	}
	if err := m.PutU64(0x8008, 0x0102030405060708); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint16(bufs[0][1:]); got != 0xbeef {
		t.Errorf("PutU16 stored %#x", got)
	}
	if bufs[0][0xffe] != 0x44 || bufs[1][1] != 0x11 {
		t.Errorf("PutU32 is not little-endian across regions")
	}
	if v, err := m.U16(0x1001); v != 0xbeef || err != nil {
		t.Errorf("U16 = %#x, %v", v, err)
	}
	if v, err := m.U32(0x1ffe); v != 0x11223344 || err != nil {
		t.Errorf("U32 = %#x, %v", v, err)
	}
	if v, err := m.U64(0x8008); v != 0x0102030405060708 || err != nil {
		t.Errorf("U64 = %#x, %v", v, err)
	}
	for _, gpa := range []uint64{0, 0xfff, 0x2fff, 0x8ffd, math.MaxUint64} {
		if _, err := m.U32(gpa); !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("U32(%#x) err = %v", gpa, err)
		}
		if err := m.PutU64(gpa, 1); !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("PutU64(%#x) err = %v", gpa, err)
		}
	}
}

func TestOrderedAccessors(t *testing.T) {
	buf := aligned(t, 64)
	m, err := NewGuestMemory(Region{0x1000, buf})
	if err != nil {
		t.Fatal(err)
	}
	// Every even offset, including the first and last u16 of the region
	// (where the containing 32-bit word may not be usable).
	for off := uint64(0); off+2 <= 64; off += 2 {
		v := uint16(0x1000 + off)
		if err := m.StoreU16Release(0x1000+off, v); err != nil {
			t.Fatalf("store at %d: %v", off, err)
		}
		if got := binary.LittleEndian.Uint16(buf[off:]); got != v {
			t.Errorf("store at %d wrote %#x, want %#x", off, got, v)
		}
		if got, err := m.LoadU16Acquire(0x1000 + off); got != v || err != nil {
			t.Errorf("load at %d = %#x, %v; want %#x", off, got, err, v)
		}
	}
	// Neighbours were not clobbered by the word-sized paths.
	for off := uint64(0); off+2 <= 64; off += 2 {
		if got := binary.LittleEndian.Uint16(buf[off:]); got != uint16(0x1000+off) {
			t.Errorf("offset %d = %#x after all stores", off, got)
		}
	}
	if _, err := m.LoadU16Acquire(0x1001); !errors.Is(err, ErrMisaligned) {
		t.Errorf("misaligned load err = %v", err)
	}
	if err := m.StoreU16Release(0x1003, 1); !errors.Is(err, ErrMisaligned) {
		t.Errorf("misaligned store err = %v", err)
	}
	if _, err := m.LoadU16Acquire(0x1040); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("load past end err = %v", err)
	}
	if err := m.StoreU16Release(0xffe, 1); !errors.Is(err, ErrOutOfBounds) {
		t.Errorf("store below start err = %v", err)
	}
	// The slice-level helpers on sub-slices whose containing word is cut
	// off on either side.
	for _, c := range []struct{ lo, hi, off int }{{2, 4, 0}, {0, 6, 4}, {2, 8, 0}, {6, 8, 0}} {
		s := buf[c.lo:c.hi]
		storeU16(s, c.off, 0xa5c3)
		if got := loadU16Acquire(s, c.off); got != 0xa5c3 {
			t.Errorf("sub-slice [%d:%d] off %d: %#x", c.lo, c.hi, c.off, got)
		}
	}
}

func TestNeedEvent(t *testing.T) {
	tests := []struct {
		event, cur, old uint16
		want            bool
	}{
		{0, 1, 0, true},           // first buffer after event 0
		{0, 2, 1, false},          // already past
		{5, 6, 3, true},           // crossed 5 in a batch of 3
		{5, 5, 3, false},          // not there yet (needs used.idx = event+1)
		{9, 6, 3, false},          // ahead
		{0xffff, 0, 0xfffe, true}, // wrap: 0xfffe -> 0 crosses 0xffff
		{0xfffe, 2, 0xfffd, true}, // wrap with batch
		{1, 2, 0xfffe, true},      // batch across zero
		{3, 2, 0xfffe, false},
		{7, 7, 7, false}, // nothing new
	}
	for _, tt := range tests {
		if got := needEvent(tt.event, tt.cur, tt.old); got != tt.want {
			t.Errorf("needEvent(event %d, cur %d, old %d) = %v, want %v", tt.event, tt.cur, tt.old, got, tt.want)
		}
	}
}
