package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// chainErrors are the errors Pop may return for a hostile ring.
var chainErrors = []error{
	virtio.ErrAvailIdxJump, virtio.ErrHeadIndex, virtio.ErrNextIndex, virtio.ErrChainTooLong,
	virtio.ErrBufferOutOfBounds, virtio.ErrWriteOrder, virtio.ErrIndirectNotNegotiated,
	virtio.ErrNestedIndirect, virtio.ErrIndirectNext, virtio.ErrIndirectLen, virtio.ErrIndirectOutOfBounds,
}

const (
	fuzzMemBase = 0x10000
	fuzzMemSize = 8192
)

// fuzzQueue lays out a queue for cfg in a fresh memory: the fuzz input is
// then copied over the memory (rings and data alike).
func fuzzQueue(cfg byte) (*vt.Driver, uint16, uint64, error) {
	size := uint16(1) << (cfg & 7)
	var features uint64
	if cfg&0x08 != 0 {
		features |= virtio.FeatureRingIndirectDesc
	}
	if cfg&0x10 != 0 {
		features |= virtio.FeatureRingEventIdx
	}
	m, err := vt.NewMemory(fuzzMemBase, fuzzMemSize)
	if err != nil {
		return nil, 0, 0, err
	}
	d, err := vt.NewDriver(m, size)
	return d, size, features, err
}

func chainSeed(f *testing.F, cfg byte, build func(d *vt.Driver) error) {
	d, _, features, err := fuzzQueue(cfg)
	if err != nil {
		f.Fatal(err)
	}
	d.EventIdx = features&virtio.FeatureRingEventIdx != 0
	if err := build(d); err != nil {
		f.Fatal(err)
	}
	d.Publish()
	f.Add(cfg, bytes.Clone(d.Mem.Buf))
}

// FuzzChain puts arbitrary bytes in guest memory where a queue's rings and
// buffers live and pops everything: Pop must neither panic nor loop, must
// return consistent chains or a typed error, and a broken queue must stay
// broken.
func FuzzChain(f *testing.F) {
	rw := func(d *vt.Driver) error {
		if _, err := d.AddChain(vt.Readable([]byte("header")), vt.Readable([]byte("payload")), vt.Writable(64)); err != nil {
			return err
		}
		_, err := d.AddChain(vt.Writable(1500))
		return err
	}
	chainSeed(f, 3, rw)                             // size 8
	chainSeed(f, 0x10|2, rw)                        // size 4, EVENT_IDX
	chainSeed(f, 0x08|4, func(d *vt.Driver) error { // size 16, indirect
		if _, err := d.AddIndirect(vt.Readable([]byte("abc")), vt.Writable(8), vt.Writable(8)); err != nil {
			return err
		}
		return rw(d)
	})
	chainSeed(f, 0x18|7, func(d *vt.Driver) error { // size 128, both
		for i := 0; i < 4; i++ {
			if _, err := d.AddIndirect(vt.Readable([]byte{byte(i)}), vt.Writable(4)); err != nil {
				return err
			}
		}
		return nil
	})
	chainSeed(f, 3, func(d *vt.Driver) error { // a loop
		a, err := d.Mem.Alloc(4, 8)
		d.SetDesc(0, vt.Desc{Addr: a, Len: 4, Flags: virtio.DescFNext, Next: 1})
		d.SetDesc(1, vt.Desc{Addr: a, Len: 4, Flags: virtio.DescFNext, Next: 0})
		d.AddHead(0)
		return err
	})
	chainSeed(f, 0xe3, rw) // start indexes just below the wrap
	f.Fuzz(func(t *testing.T, cfg byte, image []byte) {
		d, size, features, err := fuzzQueue(cfg)
		if err != nil {
			t.Fatal(err)
		}
		copy(d.Mem.Buf, image)
		q, err := d.Queue(features)
		if err != nil {
			t.Fatalf("queue: %v", err)
		}
		start := -uint16(cfg >> 5) // 0, 0xffff, ..., 0xfff9
		q.SetNextAvail(start)
		q.SetNextUsed(start)
		for i := 0; i < 2*int(size)+2; i++ {
			c, err := q.Pop()
			if err != nil {
				known := false
				for _, e := range chainErrors {
					known = known || errors.Is(err, e)
				}
				if !known {
					t.Fatalf("Pop: untyped error %v", err)
				}
				if q.Err() == nil {
					t.Fatal("queue not broken after an error")
				}
				if _, err2 := q.Pop(); err2 != err {
					t.Fatalf("second Pop = %v, want %v", err2, err)
				}
				return
			}
			if c == nil {
				if q.EnableNotification() {
					continue
				}
				return
			}
			if c.Head >= size {
				t.Fatalf("head %d >= size %d", c.Head, size)
			}
			var rl, wl uint64
			for _, b := range c.Readable {
				rl += uint64(len(b))
			}
			for _, b := range c.Writable {
				wl += uint64(len(b))
			}
			if rl != c.ReadableLen || wl != c.WritableLen {
				t.Fatalf("lengths %d/%d, slices hold %d/%d", c.ReadableLen, c.WritableLen, rl, wl)
			}
			if rl+wl > fuzzMemSize*uint64(size)*virtio.QueueSizeMax {
				t.Fatalf("chain of %d bytes", rl+wl)
			}
			c.FillWritable(make([]byte, 16))
			if err := q.Push(c.Head, uint32(min(wl, 1<<31))); err != nil {
				t.Fatalf("Push: %v", err)
			}
			q.NeedsInterrupt()
		}
	})
}

// FuzzMMIO drives a transport with arbitrary register accesses (and
// device-side events), with failures injected in the ioeventfd registry
// and the device. Nothing may panic; the transport's notifiers must always
// match what the registry holds; after Close nothing may stay registered or
// open.
func FuzzMMIO(f *testing.F) {
	for _, seed := range mmioSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		faults := data[0]
		data = data[1:]
		mem, err := vt.NewMemory(0x4000_0000, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		io := newFakeIoEvents()
		if faults&1 != 0 {
			io.failAddAt = 1 + int(faults>>5)
		}
		io.failCommit = faults&2 != 0
		nd := &notifyingDevice{fakeDevice{id: virtio.DeviceIDNet, features: virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc | 1<<5, sizes: []uint16{16, 64}}}
		var dev virtio.Device = &nd.fakeDevice
		if faults&4 != 0 {
			dev = nd
		}
		if faults&8 != 0 {
			nd.activateErr = errInjected
		}
		var act *virtio.Activation
		nd.onActivate = func(a virtio.Activation) {
			act = &a
			serve(a)
		}
		cfg := virtio.MMIOConfig{Base: 0xd000_0000, Mem: mem.Guest, IRQ: &fakeIRQ{}, IoEvents: io}
		if faults&16 != 0 {
			cfg.IoEvents = nil
		}
		tr, err := virtio.NewMMIOTransport(dev, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for len(data) >= 8 {
			op := data[:8]
			data = data[8:]
			val := binary.LittleEndian.Uint32(op[3:])
			off := uint64(binary.LittleEndian.Uint16(op[1:])) % 0x1100
			size := []int{4, 1, 2, 8}[op[0]>>2&3]
			switch op[0] & 3 {
			case 0:
				tr.Read(off, make([]byte, size))
			case 1:
				b := make([]byte, size)
				copy(b, op[3:])
				tr.Write(off, b)
			case 2:
				vt.WriteReg(tr, uint64(op[1]%64)*4, val)
			case 3:
				// Device-side events on the current activation.
				if act == nil {
					break
				}
				switch op[7] % 4 {
				case 0:
					serve(*act)
				case 1:
					act.Fail(errInjected)
				case 2:
					act.Interrupt.Signal(val)
				case 3:
					tr.ConfigChanged()
				}
			}
			if vt.ReadReg(tr, vt.RegMagicValue) != virtio.MMIOMagic {
				t.Fatal("magic changed")
			}
			if n := len(io.registered()); n != tr.Notifiers() {
				t.Fatalf("registry holds %d, transport %d notifiers", n, tr.Notifiers())
			}
			st := vt.ReadReg(tr, vt.RegStatus)
			if tr.Active() && st&virtio.StatusDriverOK == 0 {
				t.Fatalf("active with status %#x", st)
			}
		}
		io.failAddAt, io.failCommit = 0, false
		if err := tr.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if len(io.registered()) != 0 || io.openSeen() != 0 || tr.Notifiers() != 0 {
			t.Fatalf("after Close: %d registered, %d eventfds open", len(io.registered()), io.openSeen())
		}
	})
}

// serve processes every ready queue of a once, like a device worker.
func serve(a virtio.Activation) {
	for _, q := range a.Queues {
		if !q.Ready {
			continue
		}
		for i := 0; i < 2*int(q.Size); i++ {
			c, err := q.Pop()
			if err != nil {
				a.Fail(err)
				break
			}
			if c == nil {
				break
			}
			q.Push(c.Head, uint32(c.FillWritable([]byte("fuzz"))))
		}
		if q.NeedsInterrupt() {
			a.Interrupt.Signal(virtio.InterruptUsedBuffer)
		}
	}
}

// mmioSeeds encodes driver-like access sequences in FuzzMMIO's format.
func mmioSeeds() [][]byte {
	type w struct {
		off uint64
		v   uint32
	}
	enc := func(faults byte, ws []w, extra ...[]byte) []byte {
		out := []byte{faults}
		for _, x := range ws {
			op := make([]byte, 8)
			op[0] = 1 // 4-byte write
			binary.LittleEndian.PutUint16(op[1:], uint16(x.off))
			binary.LittleEndian.PutUint32(op[3:], x.v)
			out = append(out, op...)
		}
		for _, e := range extra {
			out = append(out, e...)
		}
		return out
	}
	queue := func(i uint32, base uint64) []w {
		return []w{{vt.RegQueueSel, i}, {vt.RegQueueNum, 16},
			{vt.RegQueueDescLow, uint32(base)}, {vt.RegQueueDescHigh, 0},
			{vt.RegQueueDriverLow, uint32(base + 0x100)}, {vt.RegQueueDriverHigh, 0},
			{vt.RegQueueDeviceLow, uint32(base + 0x200)}, {vt.RegQueueDeviceHigh, 0},
			{vt.RegQueueReady, 1}}
	}
	init := []w{{vt.RegStatus, 0}, {vt.RegStatus, 1}, {vt.RegStatus, 3},
		{vt.RegDriverFeaturesSel, 0}, {vt.RegDriverFeatures, 1 << 29}, {vt.RegDriverFeaturesSel, 1}, {vt.RegDriverFeatures, 1},
		{vt.RegStatus, 11}}
	init = append(init, queue(0, 0x4000_0000)...)
	init = append(init, queue(1, 0x4000_1000)...)
	init = append(init, w{vt.RegStatus, 15})
	kick := []w{{vt.RegQueueNotify, 0}, {vt.RegQueueNotify, 1}, {vt.RegInterruptACK, 3}}
	reset := []w{{vt.RegStatus, 0}}
	devEvents := []byte{3, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0, 2, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 3}
	all := append(append(append(append([]w{}, init...), kick...), reset...), init...)
	return [][]byte{
		enc(0, init),
		enc(0, all),
		enc(4|16, append(append([]w{}, init...), kick...)),
		enc(1, init),
		enc(2, all),
		enc(8, all),
		enc(0, init, devEvents),
		{0, 0, 0x70, 0, 0, 0, 0, 0, 0}, // one 4-byte read of Status
	}
}
