package virtio_test

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/virtio/virtiotest"
)

const memBase = 0x10000

func newDriver(t *testing.T, size uint16, features uint64) (*virtiotest.Driver, *virtio.Queue) {
	t.Helper()
	m, err := virtiotest.NewMemory(memBase, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	d, err := virtiotest.NewDriver(m, size)
	if err != nil {
		t.Fatal(err)
	}
	q, err := d.Queue(features)
	if err != nil {
		t.Fatal(err)
	}
	return d, q
}

// must(t)(d.AddChain(...)) fails the test on error and returns the head.
func must(t *testing.T) func(uint16, error) uint16 {
	return func(head uint16, err error) uint16 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return head
	}
}

func mustPop(t *testing.T, q *virtio.Queue) *virtio.Chain {
	t.Helper()
	c, err := q.Pop()
	if err != nil {
		t.Fatalf("Pop: %v", err)
	}
	if c == nil {
		t.Fatal("Pop: ring empty")
	}
	return c
}

func TestPopPush(t *testing.T) {
	d, q := newDriver(t, 8, 0)
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("empty ring: Pop = %v, %v", c, err)
	}
	head := must(t)(d.AddChain(virtiotest.Readable([]byte("hel")), virtiotest.Readable([]byte("lo")),
		virtiotest.Writable(4), virtiotest.Writable(16)))
	if c, _ := q.Pop(); c != nil {
		t.Fatal("chain visible before Publish")
	}
	d.Publish()
	if n, err := q.Pending(); n != 1 || err != nil {
		t.Fatalf("Pending = %d, %v", n, err)
	}
	c := mustPop(t, q)
	if c.Head != head || len(c.Readable) != 2 || len(c.Writable) != 2 || c.ReadableLen != 5 || c.WritableLen != 20 {
		t.Fatalf("chain = head %d, %d readable (%d bytes), %d writable (%d bytes)",
			c.Head, len(c.Readable), c.ReadableLen, len(c.Writable), c.WritableLen)
	}
	got := make([]byte, 16)
	if n := c.CopyReadable(got); string(got[:n]) != "hello" {
		t.Errorf("readable = %q", got[:n])
	}
	if n := c.FillWritable([]byte("world, again")); n != 12 {
		t.Errorf("FillWritable = %d", n)
	}
	if err := q.Push(c.Head, 12); err != nil {
		t.Fatal(err)
	}
	u, ok := d.GetUsed()
	if !ok || u.ID != uint32(head) || u.Len != 12 {
		t.Fatalf("used = %+v, %v", u, ok)
	}
	if w := d.Written(head, 12); string(w) != "world, again" {
		t.Errorf("written = %q", w)
	}
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("after consuming: Pop = %v, %v", c, err)
	}
	if q.NextAvail() != 1 || q.NextUsed() != 1 {
		t.Errorf("NextAvail %d NextUsed %d", q.NextAvail(), q.NextUsed())
	}
}

// TestIndexWrap runs more than 2^16 chains through a small queue so both
// free-running indexes wrap.
func TestIndexWrap(t *testing.T) {
	d, q := newDriver(t, 4, 0)
	mark := d.Mem.Mark()
	var c virtio.Chain
	for i := 0; i < 70000; i += 3 {
		d.Mem.Release(mark)
		var heads []uint16
		for j := 0; j < 3; j++ {
			heads = append(heads, must(t)(d.AddChain(virtiotest.Readable([]byte{byte(i + j)}))))
		}
		d.Publish()
		for j := 0; j < 3; j++ {
			ok, err := q.PopInto(&c)
			if !ok || err != nil {
				t.Fatalf("iteration %d: PopInto = %v, %v", i, ok, err)
			}
			if c.Head != heads[j] || len(c.Readable) != 1 || c.Readable[0][0] != byte(i+j) {
				t.Fatalf("iteration %d: wrong chain %d", i, c.Head)
			}
			if err := q.Push(c.Head, 0); err != nil {
				t.Fatal(err)
			}
		}
		for j := 0; j < 3; j++ {
			if u, ok := d.GetUsed(); !ok || u.ID != uint32(heads[j]) {
				t.Fatalf("iteration %d: used %+v %v", i, u, ok)
			}
		}
	}
	if q.NextAvail() != uint16(70002%65536) {
		t.Errorf("NextAvail = %d", q.NextAvail())
	}
}

func TestIndirect(t *testing.T) {
	d, q := newDriver(t, 8, virtio.FeatureRingIndirectDesc)
	head := must(t)(d.AddIndirect(virtiotest.Readable([]byte("abc")), virtiotest.Readable([]byte("de")),
		virtiotest.Writable(7)))
	d.Publish()
	c := mustPop(t, q)
	if c.Head != head || c.ReadableLen != 5 || c.WritableLen != 7 || len(c.Readable) != 2 {
		t.Fatalf("indirect chain: head %d readable %d writable %d", c.Head, c.ReadableLen, c.WritableLen)
	}
	got := make([]byte, 5)
	c.CopyReadable(got)
	if string(got) != "abcde" {
		t.Errorf("readable = %q", got)
	}

	// Direct descriptors followed by one indirect descriptor (allowed).
	data, _ := d.Mem.Alloc(4, 8)
	copy(d.Mem.Bytes(data, 4), "head")
	wbuf, _ := d.Mem.Alloc(32, 8)
	table, err := d.WriteTable([]virtiotest.Desc{{Addr: wbuf, Len: 32, Flags: virtio.DescFWrite}})
	if err != nil {
		t.Fatal(err)
	}
	d.SetDesc(5, virtiotest.Desc{Addr: data, Len: 4, Flags: virtio.DescFNext, Next: 6})
	d.SetDesc(6, virtiotest.Desc{Addr: table, Len: 16, Flags: virtio.DescFIndirect | virtio.DescFWrite})
	d.AddHead(5)
	d.Publish()
	c = mustPop(t, q)
	if c.Head != 5 || c.ReadableLen != 4 || c.WritableLen != 32 {
		t.Errorf("mixed chain: head %d readable %d writable %d", c.Head, c.ReadableLen, c.WritableLen)
	}
}

func TestZeroLengthDescriptor(t *testing.T) {
	d, q := newDriver(t, 4, 0)
	// A zero-length buffer is accepted whatever its address, and adds no
	// slice.
	d.SetDesc(0, virtiotest.Desc{Addr: math.MaxUint64, Len: 0, Flags: virtio.DescFNext, Next: 1})
	buf, _ := d.Mem.Alloc(8, 8)
	d.SetDesc(1, virtiotest.Desc{Addr: buf, Len: 8, Flags: virtio.DescFWrite})
	d.AddHead(0)
	d.Publish()
	c := mustPop(t, q)
	if len(c.Readable) != 0 || len(c.Writable) != 1 || c.WritableLen != 8 {
		t.Errorf("chain: %d readable, %d writable", len(c.Readable), len(c.Writable))
	}
}

// TestHostileChains feeds corrupt rings to Pop: each must fail with its
// typed error, leave the queue broken, and never panic.
func TestHostileChains(t *testing.T) {
	const size = 8
	type setup func(d *virtiotest.Driver) // lays out descriptors, adds heads
	buf := func(d *virtiotest.Driver, n uint64) uint64 {
		a, err := d.Mem.Alloc(n, 8)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name     string
		features uint64
		setup    setup
		want     error
		head     int // expected ChainError.Head, -1: not a ChainError
	}{
		{"head out of range", 0, func(d *virtiotest.Driver) {
			d.AddHead(size)
		}, virtio.ErrHeadIndex, -1},
		{"avail idx jump", 0, func(d *virtiotest.Driver) {
			d.SetAvailIdx(size + 1)
		}, virtio.ErrAvailIdxJump, -1},
		{"avail idx backwards", 0, func(d *virtiotest.Driver) {
			d.SetAvailIdx(0xffff)
		}, virtio.ErrAvailIdxJump, -1},
		{"next out of range", 0, func(d *virtiotest.Driver) {
			d.SetDesc(2, virtiotest.Desc{Addr: buf(d, 4), Len: 4, Flags: virtio.DescFNext, Next: size})
			d.AddHead(2)
		}, virtio.ErrNextIndex, 2},
		{"self loop", 0, func(d *virtiotest.Driver) {
			d.SetDesc(1, virtiotest.Desc{Addr: buf(d, 4), Len: 4, Flags: virtio.DescFNext, Next: 1})
			d.AddHead(1)
		}, virtio.ErrChainTooLong, 1},
		{"loop", 0, func(d *virtiotest.Driver) {
			a := buf(d, 4)
			d.SetDesc(0, virtiotest.Desc{Addr: a, Len: 4, Flags: virtio.DescFNext, Next: 3})
			d.SetDesc(3, virtiotest.Desc{Addr: a, Len: 4, Flags: virtio.DescFNext, Next: 5})
			d.SetDesc(5, virtiotest.Desc{Addr: a, Len: 4, Flags: virtio.DescFNext, Next: 3})
			d.AddHead(0)
		}, virtio.ErrChainTooLong, 0},
		{"buffer outside memory", 0, func(d *virtiotest.Driver) {
			d.SetDesc(0, virtiotest.Desc{Addr: 0x100, Len: 4})
			d.AddHead(0)
		}, virtio.ErrBufferOutOfBounds, 0},
		{"buffer past end of memory", 0, func(d *virtiotest.Driver) {
			d.SetDesc(0, virtiotest.Desc{Addr: memBase + 1<<20 - 2, Len: 4, Flags: virtio.DescFWrite})
			d.AddHead(0)
		}, virtio.ErrBufferOutOfBounds, 0},
		{"buffer address wraps", 0, func(d *virtiotest.Driver) {
			d.SetDesc(0, virtiotest.Desc{Addr: math.MaxUint64 - 1, Len: 0x20000})
			d.AddHead(0)
		}, virtio.ErrBufferOutOfBounds, 0},
		{"readable after writable", 0, func(d *virtiotest.Driver) {
			d.SetDesc(0, virtiotest.Desc{Addr: buf(d, 4), Len: 4, Flags: virtio.DescFWrite | virtio.DescFNext, Next: 1})
			d.SetDesc(1, virtiotest.Desc{Addr: buf(d, 4), Len: 4})
			d.AddHead(0)
		}, virtio.ErrWriteOrder, 0},
		{"indirect not negotiated", 0, func(d *virtiotest.Driver) {
			tbl, _ := d.WriteTable([]virtiotest.Desc{{Addr: buf(d, 4), Len: 4}})
			d.SetDesc(0, virtiotest.Desc{Addr: tbl, Len: 16, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrIndirectNotNegotiated, 0},
		{"nested indirect", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			inner, _ := d.WriteTable([]virtiotest.Desc{{Addr: buf(d, 4), Len: 4}})
			outer, _ := d.WriteTable([]virtiotest.Desc{{Addr: inner, Len: 16, Flags: virtio.DescFIndirect}})
			d.SetDesc(0, virtiotest.Desc{Addr: outer, Len: 16, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrNestedIndirect, 0},
		{"indirect with next", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			tbl, _ := d.WriteTable([]virtiotest.Desc{{Addr: buf(d, 4), Len: 4}})
			d.SetDesc(0, virtiotest.Desc{Addr: tbl, Len: 16, Flags: virtio.DescFIndirect | virtio.DescFNext, Next: 1})
			d.AddHead(0)
		}, virtio.ErrIndirectNext, 0},
		{"indirect length not multiple of 16", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			tbl, _ := d.WriteTable([]virtiotest.Desc{{Addr: buf(d, 4), Len: 4}, {}})
			d.SetDesc(0, virtiotest.Desc{Addr: tbl, Len: 24, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrIndirectLen, 0},
		{"indirect length zero", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			d.SetDesc(0, virtiotest.Desc{Addr: memBase, Len: 0, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrIndirectLen, 0},
		{"indirect table too long", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			d.SetDesc(0, virtiotest.Desc{Addr: memBase, Len: 16 * (virtio.QueueSizeMax + 1), Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrIndirectLen, 0},
		{"indirect table outside memory", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			d.SetDesc(0, virtiotest.Desc{Addr: memBase + 1<<20 - 16, Len: 32, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrIndirectOutOfBounds, 0},
		{"indirect loop", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			a := buf(d, 4)
			tbl, _ := d.WriteTable([]virtiotest.Desc{
				{Addr: a, Len: 4, Flags: virtio.DescFNext, Next: 1},
				{Addr: a, Len: 4, Flags: virtio.DescFNext, Next: 0},
			})
			d.SetDesc(0, virtiotest.Desc{Addr: tbl, Len: 32, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrChainTooLong, 0},
		{"indirect next out of range", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			tbl, _ := d.WriteTable([]virtiotest.Desc{{Addr: buf(d, 4), Len: 4, Flags: virtio.DescFNext, Next: 1}})
			d.SetDesc(0, virtiotest.Desc{Addr: tbl, Len: 16, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrNextIndex, 0},
		{"indirect buffer outside memory", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			tbl, _ := d.WriteTable([]virtiotest.Desc{{Addr: 8, Len: 4}})
			d.SetDesc(0, virtiotest.Desc{Addr: tbl, Len: 16, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrBufferOutOfBounds, 0},
		{"indirect readable after writable", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			tbl, _ := d.WriteTable([]virtiotest.Desc{
				{Addr: buf(d, 4), Len: 4, Flags: virtio.DescFWrite | virtio.DescFNext, Next: 1},
				{Addr: buf(d, 4), Len: 4},
			})
			d.SetDesc(0, virtiotest.Desc{Addr: tbl, Len: 32, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrWriteOrder, 0},
		{"writable direct then readable in indirect", virtio.FeatureRingIndirectDesc, func(d *virtiotest.Driver) {
			tbl, _ := d.WriteTable([]virtiotest.Desc{{Addr: buf(d, 4), Len: 4}})
			d.SetDesc(0, virtiotest.Desc{Addr: buf(d, 4), Len: 4, Flags: virtio.DescFWrite | virtio.DescFNext, Next: 1})
			d.SetDesc(1, virtiotest.Desc{Addr: tbl, Len: 16, Flags: virtio.DescFIndirect})
			d.AddHead(0)
		}, virtio.ErrWriteOrder, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, q := newDriver(t, size, tt.features)
			tt.setup(d)
			if d.AvailIdx() == 0 {
				d.Publish()
			}
			c, err := q.Pop()
			if c != nil || !errors.Is(err, tt.want) {
				t.Fatalf("Pop = %v, %v; want %v", c, err, tt.want)
			}
			var ce *virtio.ChainError
			if isChain := errors.As(err, &ce); isChain != (tt.head >= 0) || (isChain && int(ce.Head) != tt.head) {
				t.Errorf("ChainError = %v (want head %d)", ce, tt.head)
			}
			if errors.Is(tt.want, virtio.ErrBufferOutOfBounds) || errors.Is(tt.want, virtio.ErrIndirectOutOfBounds) {
				if !errors.Is(err, virtio.ErrOutOfBounds) {
					t.Errorf("%v does not unwrap to ErrOutOfBounds", err)
				}
			}
			// The queue is broken: the same error again, nothing consumed.
			if q.Err() == nil {
				t.Error("Err() = nil after a failed Pop")
			}
			if _, err2 := q.Pop(); err2 != err {
				t.Errorf("second Pop = %v, want the same error", err2)
			}
			if _, err2 := q.Pending(); err2 != err {
				t.Errorf("Pending = %v, want the same error", err2)
			}
			if !q.EnableNotification() {
				t.Error("EnableNotification on a broken queue must ask for another Pop")
			}
			if q.NextAvail() != 0 {
				t.Errorf("NextAvail = %d after failure", q.NextAvail())
			}
			// Reset and Init recover the queue.
			q.Reset()
			if q.Err() != nil || q.Bound() {
				t.Error("Reset did not clear the queue")
			}
		})
	}
}

// TestChainLength: a loop-free chain through every descriptor is fine.
func TestChainLength(t *testing.T) {
	const size = 8
	d, q := newDriver(t, size, 0)
	a, _ := d.Mem.Alloc(size, 8)
	for i := uint16(0); i < size; i++ {
		desc := virtiotest.Desc{Addr: a + uint64(i), Len: 1, Flags: virtio.DescFNext, Next: (i + 3) % size}
		if i == 5 { // 0,3,6,1,4,7,2,5: the eighth and last
			desc.Flags = 0
		}
		d.SetDesc(i, desc)
	}
	d.AddHead(0)
	d.Publish()
	c := mustPop(t, q)
	if len(c.Readable) != size {
		t.Errorf("%d buffers, want %d", len(c.Readable), size)
	}
}

func TestChainAcrossRegions(t *testing.T) {
	// Two adjacent regions; a buffer spanning them yields two slices.
	lo, hi := make([]byte, 0x1000), make([]byte, 0x1000)
	mem, err := virtio.NewGuestMemory(virtio.Region{GPA: 0x1000, Mem: lo}, virtio.Region{GPA: 0x2000, Mem: hi})
	if err != nil {
		t.Fatal(err)
	}
	q := virtio.NewQueue(4)
	q.DescAddr, q.DriverAddr, q.DeviceAddr, q.Ready = 0x1000, 0x1100, 0x1200, true
	if err := q.Init(mem); err != nil {
		t.Fatal(err)
	}
	mustNil := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustNil(mem.PutU64(0x1000, 0x1ff0))       // desc[0].addr
	mustNil(mem.PutU32(0x1008, 0x20))         // desc[0].len
	mustNil(mem.PutU16(0x1100+4, 0))          // avail.ring[0]
	mustNil(mem.StoreU16Release(0x1100+2, 1)) // avail.idx
	copy(lo[0xff0:], "0123456789abcdef")      // first half
	copy(hi, "ghijklmnopqrstuv")              // second half
	c := mustPop(t, q)
	if len(c.Readable) != 2 || c.ReadableLen != 0x20 {
		t.Fatalf("%d slices, %d bytes", len(c.Readable), c.ReadableLen)
	}
	got := make([]byte, 0x20)
	c.CopyReadable(got)
	if string(got) != "0123456789abcdefghijklmnopqrstuv" {
		t.Errorf("got %q", got)
	}
}

func TestQueueInit(t *testing.T) {
	m, err := virtiotest.NewMemory(memBase, 0x4000)
	if err != nil {
		t.Fatal(err)
	}
	good := func() *virtio.Queue {
		q := virtio.NewQueue(256)
		q.Size, q.DescAddr, q.DriverAddr, q.DeviceAddr = 16, memBase, memBase+0x100, memBase+0x200
		return q
	}
	tests := []struct {
		name   string
		modify func(q *virtio.Queue)
		want   error
	}{
		{"ok", func(q *virtio.Queue) {}, nil},
		{"max size", func(q *virtio.Queue) { q.Size = 256; q.DriverAddr = memBase + 0x1000; q.DeviceAddr = memBase + 0x2000 }, nil},
		{"size 0", func(q *virtio.Queue) { q.Size = 0 }, virtio.ErrQueueSize},
		{"size 3", func(q *virtio.Queue) { q.Size = 3 }, virtio.ErrQueueSize},
		{"size above max", func(q *virtio.Queue) { q.Size = 512 }, virtio.ErrQueueSize},
		{"desc misaligned", func(q *virtio.Queue) { q.DescAddr += 8 }, virtio.ErrQueueAlign},
		{"avail misaligned", func(q *virtio.Queue) { q.DriverAddr++ }, virtio.ErrQueueAlign},
		{"used misaligned", func(q *virtio.Queue) { q.DeviceAddr += 2 }, virtio.ErrQueueAlign},
		{"desc outside", func(q *virtio.Queue) { q.DescAddr = 0 }, virtio.ErrOutOfBounds},
		{"avail runs off the end", func(q *virtio.Queue) { q.DriverAddr = memBase + 0x4000 - 32 }, virtio.ErrOutOfBounds},
		{"used runs off the end", func(q *virtio.Queue) { q.DeviceAddr = memBase + 0x4000 - 64 }, virtio.ErrOutOfBounds},
		{"used_event runs off the end", func(q *virtio.Queue) {
			q.EventIdx = true
			q.DriverAddr = memBase + 0x4000 - 36
		}, virtio.ErrOutOfBounds},
		{"used address wraps", func(q *virtio.Queue) { q.DeviceAddr = math.MaxUint64 - 3 }, virtio.ErrOutOfBounds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := good()
			tt.modify(q)
			err := q.Init(m.Guest)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Init = %v, want %v", err, tt.want)
			}
			if q.Bound() != (err == nil) {
				t.Errorf("Bound = %v", q.Bound())
			}
			if err != nil {
				if _, perr := q.Pop(); !errors.Is(perr, virtio.ErrQueueNotReady) {
					t.Errorf("Pop on unbound queue = %v", perr)
				}
				if perr := q.Push(0, 0); !errors.Is(perr, virtio.ErrQueueNotReady) {
					t.Errorf("Push on unbound queue = %v", perr)
				}
			}
		})
	}
	if err := good().Init(nil); !errors.Is(err, virtio.ErrQueueNotReady) {
		t.Errorf("Init(nil) = %v", err)
	}
}

func TestPushErrors(t *testing.T) {
	d, q := newDriver(t, 8, 0)
	if err := q.Push(8, 0); !errors.Is(err, virtio.ErrHeadIndex) {
		t.Errorf("Push(8) = %v", err)
	}
	if d.UsedIdx() != 0 {
		t.Error("failed Push published")
	}
	// AddUsed batches until PublishUsed.
	for i := uint16(0); i < 3; i++ {
		if err := q.AddUsed(i, uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	if d.UsedIdx() != 0 {
		t.Error("AddUsed published")
	}
	q.PublishUsed()
	if d.UsedIdx() != 3 || d.UsedElem(2) != (virtiotest.Used{ID: 2, Len: 2}) {
		t.Errorf("after PublishUsed: idx %d, elem %+v", d.UsedIdx(), d.UsedElem(2))
	}
}

func TestNeedsInterruptFlags(t *testing.T) {
	d, q := newDriver(t, 8, 0)
	if q.NeedsInterrupt() {
		t.Error("interrupt with nothing published")
	}
	q.Push(0, 0)
	if !q.NeedsInterrupt() {
		t.Error("no interrupt with flags 0")
	}
	if q.NeedsInterrupt() {
		t.Error("second interrupt for the same element")
	}
	d.SetAvailFlags(virtio.AvailFNoInterrupt)
	q.Push(1, 0)
	if q.NeedsInterrupt() {
		t.Error("interrupt despite NO_INTERRUPT")
	}
	d.SetAvailFlags(0)
	q.Push(2, 0)
	if !q.NeedsInterrupt() {
		t.Error("no interrupt after NO_INTERRUPT cleared")
	}
	// Without EVENT_IDX, used_event is ignored.
	d.SetUsedEvent(100)
	q.Push(3, 0)
	if !q.NeedsInterrupt() {
		t.Error("used_event honoured without EVENT_IDX")
	}
}

func TestNeedsInterruptEventIdx(t *testing.T) {
	tests := []struct {
		name      string
		start     uint16 // NextUsed before the first push
		usedEvent uint16
		pushes    []int  // batches, NeedsInterrupt after each
		want      []bool // per batch
	}{
		{"event ahead", 0, 100, []int{1, 50}, []bool{false, false}},
		{"first element, event 0", 0, 0, []int{1}, []bool{true}},
		{"event reached", 0, 1, []int{1, 1, 1}, []bool{false, true, false}},
		{"batch crosses event", 0, 3, []int{1, 4, 1}, []bool{false, true, false}},
		{"event behind", 0, 0, []int{1, 1}, []bool{true, false}},
		{"wrap", 0xfffd, 0xffff, []int{1, 1, 1, 1}, []bool{false, false, true, false}},
		{"batch across zero", 0xfffd, 0, []int{1, 3}, []bool{false, true}},
		{"restored far behind event", 0x8000, 0x10, []int{1, 0x0f}, []bool{false, false}},
		{"nothing pushed", 0, 0, []int{1, 0}, []bool{true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, q := newDriver(t, 8, virtio.FeatureRingEventIdx)
			q.SetNextUsed(tt.start)
			d.SetUsedEvent(tt.usedEvent)
			for i, n := range tt.pushes {
				for j := 0; j < n; j++ {
					if err := q.Push(0, 0); err != nil {
						t.Fatal(err)
					}
				}
				if got := q.NeedsInterrupt(); got != tt.want[i] {
					t.Errorf("batch %d (used.idx %d, used_event %d): NeedsInterrupt = %v, want %v",
						i, d.UsedIdx(), tt.usedEvent, got, tt.want[i])
				}
			}
		})
	}
	// EVENT_IDX ignores NO_INTERRUPT.
	d, q := newDriver(t, 8, virtio.FeatureRingEventIdx)
	d.SetAvailFlags(virtio.AvailFNoInterrupt)
	q.Push(0, 0)
	if !q.NeedsInterrupt() {
		t.Error("EVENT_IDX: NO_INTERRUPT flag honoured")
	}
}

func TestNotificationSuppression(t *testing.T) {
	t.Run("flags", func(t *testing.T) {
		d, q := newDriver(t, 8, 0)
		q.DisableNotification()
		if d.UsedFlags()&virtio.UsedFNoNotify == 0 {
			t.Fatal("NO_NOTIFY not set")
		}
		must(t)(d.AddChain(virtiotest.Readable([]byte("x"))))
		if d.Publish() {
			t.Error("driver would kick despite NO_NOTIFY")
		}
		// The race EnableNotification closes: a chain arrived unkicked.
		if !q.EnableNotification() {
			t.Error("EnableNotification missed the pending chain")
		}
		if d.UsedFlags() != 0 {
			t.Error("NO_NOTIFY still set")
		}
		mustPop(t, q)
		if q.EnableNotification() {
			t.Error("EnableNotification on an empty ring returned true")
		}
		must(t)(d.AddChain(virtiotest.Readable([]byte("y"))))
		if !d.Publish() {
			t.Error("driver would not kick with notifications enabled")
		}
	})
	t.Run("event idx", func(t *testing.T) {
		d, q := newDriver(t, 8, virtio.FeatureRingEventIdx)
		q.DisableNotification() // no-op with EVENT_IDX
		if d.UsedFlags() != 0 {
			t.Error("flags written with EVENT_IDX")
		}
		must(t)(d.AddChain(virtiotest.Readable([]byte("a"))))
		if !d.Publish() { // avail_event 0: the first chain kicks
			t.Error("first chain not kicked")
		}
		mustPop(t, q)
		must(t)(d.AddChain(virtiotest.Readable([]byte("b"))))
		if d.Publish() { // avail_event still 0: no kick
			t.Error("kick although avail_event was not moved")
		}
		if !q.EnableNotification() || d.AvailEvent() != 1 {
			t.Errorf("EnableNotification: avail_event %d, pending chain not reported", d.AvailEvent())
		}
		mustPop(t, q)
		if q.EnableNotification() || d.AvailEvent() != 2 {
			t.Errorf("avail_event = %d, want 2", d.AvailEvent())
		}
		must(t)(d.AddChain(virtiotest.Readable([]byte("c"))))
		if !d.Publish() {
			t.Error("no kick after EnableNotification")
		}
	})
}

func TestSaveRestore(t *testing.T) {
	d, q := newDriver(t, 8, 0)
	var heads []uint16
	for i := 0; i < 5; i++ {
		heads = append(heads, must(t)(d.AddChain(virtiotest.Readable([]byte{byte(i)}))))
	}
	d.Publish()
	for i := 0; i < 3; i++ {
		c := mustPop(t, q)
		if i < 2 {
			q.Push(c.Head, 0)
		}
	}
	// The third chain was popped but not returned: a vhost backend would
	// be handed base 3 for the avail side and used index 2.
	avail, used := q.NextAvail(), q.NextUsed()
	if avail != 3 || used != 2 {
		t.Fatalf("NextAvail %d NextUsed %d", avail, used)
	}
	q2 := virtio.NewQueue(8)
	d.Configure(q2, 0)
	q2.SetNextAvail(avail)
	q2.SetNextUsed(used)
	if err := q2.Init(d.Mem.Guest); err != nil {
		t.Fatal(err)
	}
	c := mustPop(t, q2)
	if c.Head != heads[3] || c.Readable[0][0] != 3 {
		t.Errorf("restored queue popped head %d (%d), want %d", c.Head, c.Readable[0][0], heads[3])
	}
	q2.Push(c.Head, 0)
	if d.UsedIdx() != 3 || d.UsedElem(2).ID != uint32(heads[3]) {
		t.Errorf("used.idx %d elem %+v", d.UsedIdx(), d.UsedElem(2))
	}
}

func TestPopIntoReuse(t *testing.T) {
	d, q := newDriver(t, 8, 0)
	must(t)(d.AddChain(virtiotest.Readable([]byte("aa")), virtiotest.Writable(2), virtiotest.Writable(2)))
	must(t)(d.AddChain(virtiotest.Readable([]byte("b"))))
	d.Publish()
	var c virtio.Chain
	for i, want := range []string{"aa", "b"} {
		ok, err := q.PopInto(&c)
		if !ok || err != nil {
			t.Fatal(ok, err)
		}
		got := make([]byte, 8)
		n := c.CopyReadable(got)
		if !bytes.Equal(got[:n], []byte(want)) || (i == 1 && (len(c.Writable) != 0 || c.WritableLen != 0)) {
			t.Errorf("chain %d: %q, %d writable", i, got[:n], len(c.Writable))
		}
	}
	if ok, err := q.PopInto(&c); ok || err != nil {
		t.Errorf("empty: %v %v", ok, err)
	}
}
