package mmio

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
)

// recDev records accesses and answers reads with tag^offset-derived bytes,
// so a test can tell which device saw which offset.
type recDev struct {
	tag byte

	mu     sync.Mutex
	reads  []access
	writes []access
}

type access struct {
	off uint64
	n   int
	val []byte
}

func (d *recDev) Read(off uint64, data []byte) {
	for i := range data {
		data[i] = d.tag ^ byte(off+uint64(i))
	}
	d.mu.Lock()
	d.reads = append(d.reads, access{off: off, n: len(data)})
	d.mu.Unlock()
}

func (d *recDev) Write(off uint64, data []byte) {
	d.mu.Lock()
	d.writes = append(d.writes, access{off: off, n: len(data), val: append([]byte(nil), data...)})
	d.mu.Unlock()
}

func (d *recDev) counts() (int, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.reads), len(d.writes)
}

func TestBusAccessBoundaries(t *testing.T) {
	// Two adjacent ranges and one at the top of the address space.
	a := &recDev{tag: 0xa0}
	b := &recDev{tag: 0xb0}
	top := &recDev{tag: 0x70}
	bus := NewBus("test")
	for _, r := range []struct {
		base, size uint64
		d          Device
	}{
		{0x1000, 0x10, a},
		{0x1010, 0x8, b}, // adjacent to a
		{math.MaxUint64 - 7, 8, top},
	} {
		if err := bus.Insert(r.base, r.size, r.d); err != nil {
			t.Fatalf("Insert(%#x, %#x): %v", r.base, r.size, err)
		}
	}

	tests := []struct {
		name    string
		addr    uint64
		n       int
		dev     *recDev // nil: unmapped
		wantOff uint64
	}{
		{"first byte", 0x1000, 1, a, 0},
		{"last byte", 0x100f, 1, a, 0xf},
		{"last dword", 0x100c, 4, a, 0xc},
		{"whole range", 0x1000, 16, a, 0},
		{"one before first", 0xfff, 1, nil, 0},
		{"crossing start", 0xffe, 4, nil, 0},
		{"crossing into adjacent", 0x100e, 4, nil, 0},
		{"adjacent first byte", 0x1010, 1, b, 0},
		{"adjacent last qword", 0x1010, 8, b, 0},
		{"one past the end", 0x1018, 1, nil, 0},
		{"crossing the end", 0x1014, 8, nil, 0},
		{"top of address space", math.MaxUint64, 1, top, 7},
		{"top qword", math.MaxUint64 - 7, 8, top, 0},
		{"wrapping past 2^64", math.MaxUint64 - 1, 4, nil, 0},
		{"address 0", 0, 1, nil, 0},
		{"huge access", 0x1000, 1 << 20, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before [2]int
			if tc.dev != nil {
				before[0], before[1] = tc.dev.counts()
			}
			data := make([]byte, tc.n)
			rerr := bus.Read(tc.addr, data)
			werr := bus.Write(tc.addr, data)
			if tc.dev == nil {
				for _, err := range []error{rerr, werr} {
					var ue *UnmappedError
					if !errors.Is(err, ErrUnmapped) || !errors.As(err, &ue) {
						t.Fatalf("err = %v, want *UnmappedError", err)
					}
					if ue.Bus != "test" || ue.Addr != tc.addr || ue.Len != tc.n {
						t.Errorf("UnmappedError = %+v, want bus test addr %#x len %d", ue, tc.addr, tc.n)
					}
					if msg := err.Error(); !strings.Contains(msg, "test bus") || !strings.Contains(msg, fmt.Sprintf("%#x", tc.addr)) {
						t.Errorf("message %q does not name bus and address", msg)
					}
				}
				for i, v := range data {
					if v != 0xff {
						t.Fatalf("unmapped read byte %d = %#x, want 0xff", i, v)
					}
				}
				return
			}
			if rerr != nil || werr != nil {
				t.Fatalf("Read: %v, Write: %v", rerr, werr)
			}
			for i, v := range data {
				if want := tc.dev.tag ^ byte(tc.wantOff+uint64(i)); v != want {
					t.Fatalf("byte %d = %#x, want %#x (wrong device or offset)", i, v, want)
				}
			}
			r, w := tc.dev.counts()
			if r != before[0]+1 || w != before[1]+1 {
				t.Fatalf("device saw %d reads, %d writes; want one more of each", r-before[0], w-before[1])
			}
			tc.dev.mu.Lock()
			got := tc.dev.writes[len(tc.dev.writes)-1]
			tc.dev.mu.Unlock()
			if got.off != tc.wantOff || got.n != tc.n {
				t.Errorf("write at offset %#x len %d, want %#x len %d", got.off, got.n, tc.wantOff, tc.n)
			}
		})
	}
}

func TestBusInsertErrors(t *testing.T) {
	// Existing: [0x100-0x1ff] and [0x300-0x3ff].
	tests := []struct {
		name       string
		base, size uint64
		want       error  // nil: must succeed
		existing   string // the range an overlap error must name
	}{
		{"identical", 0x100, 0x100, ErrOverlap, "[0x100-0x1ff]"},
		{"contained", 0x140, 0x10, ErrOverlap, "[0x100-0x1ff]"},
		{"containing", 0x80, 0x200, ErrOverlap, "[0x100-0x1ff]"},
		{"left partial", 0xf0, 0x20, ErrOverlap, "[0x100-0x1ff]"},
		{"right partial", 0x1f0, 0x20, ErrOverlap, "[0x100-0x1ff]"},
		{"same base smaller", 0x100, 1, ErrOverlap, "[0x100-0x1ff]"},
		{"last byte", 0x1ff, 1, ErrOverlap, "[0x100-0x1ff]"},
		{"spanning the gap", 0x1ff, 0x102, ErrOverlap, "[0x100-0x1ff]"},
		{"gap exactly", 0x200, 0x100, nil, ""},
		{"left adjacent", 0xf0, 0x10, nil, ""},
		{"right of second, adjacent", 0x400, 1, nil, ""},
		{"containing second only", 0x2ff, 0x102, ErrOverlap, "[0x300-0x3ff]"},
		{"size 0", 0x1000, 0, ErrInvalidRange, ""},
		{"overflow", math.MaxUint64, 2, ErrInvalidRange, ""},
		{"overflow large", 1 << 63, 1<<63 + 1, ErrInvalidRange, ""},
		{"ends exactly at 2^64", math.MaxUint64 - 0xff, 0x100, nil, ""},
		{"whole address space but 0", 1, math.MaxUint64, ErrOverlap, "[0x100-0x1ff]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bus := NewBus("pio")
			for _, base := range []uint64{0x100, 0x300} {
				if err := bus.Insert(base, 0x100, &recDev{}); err != nil {
					t.Fatal(err)
				}
			}
			err := bus.Insert(tc.base, tc.size, &recDev{})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Insert: %v", err)
				}
				if got := len(bus.Ranges()); got != 3 {
					t.Fatalf("%d ranges after insert, want 3", got)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Insert(%#x, %#x) = %v, want %v", tc.base, tc.size, err, tc.want)
			}
			if tc.want == ErrOverlap {
				var oe *OverlapError
				if !errors.As(err, &oe) {
					t.Fatalf("not an *OverlapError: %T", err)
				}
				newR := Range{Base: tc.base, Size: tc.size}.String()
				if msg := err.Error(); !strings.Contains(msg, newR) || !strings.Contains(msg, tc.existing) || !strings.Contains(msg, "pio bus") {
					t.Errorf("message %q does not name %s, %s and the bus", msg, newR, tc.existing)
				}
			}
			if got := len(bus.Ranges()); got != 2 {
				t.Fatalf("failed insert changed the bus: %d ranges", got)
			}
		})
	}
}

func TestBusInsertNilDevice(t *testing.T) {
	if err := NewBus("x").Insert(0, 1, nil); !errors.Is(err, ErrInvalidRange) {
		t.Fatalf("Insert(nil device) = %v, want ErrInvalidRange", err)
	}
}

func TestBusRemove(t *testing.T) {
	bus := NewBus("mmio")
	a, b := &recDev{tag: 1}, &recDev{tag: 2}
	if err := bus.Insert(0x1000, 0x100, a); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		base uint64
		want error
	}{
		{"inside, not base", 0x1001, ErrNotFound},
		{"unknown", 0x2000, ErrNotFound},
		{"base", 0x1000, nil},
		{"twice", 0x1000, ErrNotFound},
	}
	for _, tc := range tests {
		err := bus.Remove(tc.base)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Fatalf("%s: Remove(%#x) = %v, want %v", tc.name, tc.base, err, tc.want)
		}
	}
	if err := bus.Read(0x1000, make([]byte, 1)); !errors.Is(err, ErrUnmapped) {
		t.Fatalf("read after remove: %v, want ErrUnmapped", err)
	}
	// The freed range can be reused, even by an overlapping new range.
	if err := bus.Insert(0x1080, 0x100, b); err != nil {
		t.Fatalf("insert after remove: %v", err)
	}
	buf := make([]byte, 1)
	if err := bus.Read(0x1080, buf); err != nil || buf[0] != 2 {
		t.Fatalf("read new device: %#x, %v", buf[0], err)
	}
	if r, _ := a.counts(); r != 0 {
		t.Fatalf("removed device still got %d reads", r)
	}
}

func TestBusKeepsOrder(t *testing.T) {
	bus := NewBus("x")
	bases := []uint64{0x500, 0x100, 0x900, 0x300, 0x700}
	for _, base := range bases {
		if err := bus.Insert(base, 0x100, &recDev{tag: byte(base >> 8)}); err != nil {
			t.Fatal(err)
		}
	}
	rs := bus.Ranges()
	for i := 1; i < len(rs); i++ {
		if rs[i-1].Last() >= rs[i].Base {
			t.Fatalf("ranges out of order or overlapping: %v", rs)
		}
	}
	for _, base := range bases {
		buf := make([]byte, 1)
		if err := bus.Read(base+0x10, buf); err != nil || buf[0] != byte(base>>8)^0x10 {
			t.Fatalf("read %#x: %#x, %v", base+0x10, buf[0], err)
		}
	}
}

func TestBusZeroLengthAccess(t *testing.T) {
	bus := NewBus("x")
	d := &recDev{}
	if err := bus.Insert(0x10, 4, d); err != nil {
		t.Fatal(err)
	}
	if err := bus.Read(0x10, nil); err != nil {
		t.Fatalf("zero-length read of mapped addr: %v", err)
	}
	if err := bus.Write(0x20, nil); !errors.Is(err, ErrUnmapped) {
		t.Fatalf("zero-length write of unmapped addr: %v", err)
	}
	if r, w := d.counts(); r+w != 0 {
		t.Fatal("device called for a zero-length access")
	}
}

// reentrantDev inserts and removes ranges on its own bus from inside an
// access: this deadlocks if the bus lock were held while calling devices.
type reentrantDev struct{ bus *Bus }

func (d reentrantDev) Read(uint64, []byte) {
	_ = d.bus.Insert(0x9000, 1, NewSink(0))
	_ = d.bus.Remove(0x9000)
}
func (d reentrantDev) Write(uint64, []byte) { d.Read(0, nil) }

func TestBusDeviceCalledWithoutLock(t *testing.T) {
	bus := NewBus("x")
	if err := bus.Insert(0, 1, reentrantDev{bus}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Read(0, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := bus.Write(0, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

// counterDev counts accesses per offset, to check nothing is lost under
// concurrency.
type counterDev struct {
	mu sync.Mutex
	n  map[uint64]int
}

func (d *counterDev) Read(off uint64, data []byte) {
	d.mu.Lock()
	data[0] = byte(d.n[off])
	d.mu.Unlock()
}

func (d *counterDev) Write(off uint64, _ []byte) {
	d.mu.Lock()
	d.n[off]++
	d.mu.Unlock()
}

func TestBusConcurrent(t *testing.T) {
	bus := NewBus("x")
	stable := &counterDev{n: map[uint64]int{}}
	if err := bus.Insert(0x1000, 0x100, stable); err != nil {
		t.Fatal(err)
	}
	const workers, iters = 4, 2000
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 1)
			for i := range iters {
				off := uint64((w*iters + i) % 0x100)
				if err := bus.Write(0x1000+off, buf); err != nil {
					errs <- err
					return
				}
				if err := bus.Read(0x1000+off, buf); err != nil {
					errs <- err
					return
				}
				// Churned range: either mapped or not, never an other error.
				if err := bus.Read(0x2000, buf); err != nil && !errors.Is(err, ErrUnmapped) {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range iters {
			if err := bus.Insert(0x2000, 0x10, NewSink(1)); err != nil {
				errs <- err
				return
			}
			if err := bus.Remove(0x2000); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, n := range stable.n {
		total += n
	}
	if total != workers*iters {
		t.Fatalf("device saw %d writes, want %d", total, workers*iters)
	}
}
