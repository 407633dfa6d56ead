package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// fakeIO is a PacketIO: ReadPacket hands out in (then ErrNoPacket),
// WritePacket appends the concatenated packet to out.
type fakeIO struct {
	mu       sync.Mutex
	in       [][]byte
	out      [][]byte
	writeErr error
	reads    int
}

func (f *fakeIO) ReadPacket(buf []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if len(f.in) == 0 {
		return 0, virtio.ErrNoPacket
	}
	p := f.in[0]
	f.in = f.in[1:]
	return copy(buf, p), nil
}

func (f *fakeIO) WritePacket(pkt [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeErr != nil {
		return f.writeErr
	}
	f.out = append(f.out, bytes.Join(pkt, nil))
	return nil
}

func (f *fakeIO) push(p ...[]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.in = append(f.in, p...)
}

func (f *fakeIO) written() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.out...)
}

// countIRQ is an Interrupt (and IRQTrigger) that counts.
type countIRQ struct{ n atomic.Int64 }

func (c *countIRQ) Signal(uint32) error { c.n.Add(1); return nil }
func (c *countIRQ) Trigger() error      { c.n.Add(1); return nil }
func (c *countIRQ) count() int          { return int(c.n.Load()) }

// netHdr builds a 12-byte virtio-net header.
func netHdr(flags, gso uint8, numBuffers uint16) []byte {
	h := make([]byte, virtio.NetHdrSize)
	h[0], h[1] = flags, gso
	binary.LittleEndian.PutUint16(h[10:], numBuffers)
	return h
}

// frame builds an Ethernet frame of n bytes (n >= 14) to dst.
func frame(dst []byte, n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, dst)
	copy(f[6:], []byte{0x02, 0, 0, 0, 0, 0x99})
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	for i := 14; i < n; i++ {
		f[i] = byte(i)*7 + seed
	}
	return f
}

var (
	bcastMAC = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	devMAC   = []byte{0x02, 0x47, 0x56, 0x00, 0x00, 0x01}
)

// pairEnv is one queue pair over test memory, driven synchronously.
type pairEnv struct {
	mem      *vt.Memory
	rx, tx   *vt.Driver
	rxq, txq *virtio.Queue
	io       *fakeIO
	irq      *countIRQ
	pair     *virtio.NetQueuePair
}

func newPairEnv(t *testing.T, features uint64, size uint16) *pairEnv {
	t.Helper()
	return newPairEnvAccept(t, features, size, nil)
}

func newPairEnvAccept(t *testing.T, features uint64, size uint16, accept func([]byte) bool) *pairEnv {
	t.Helper()
	mem, err := vt.NewMemory(0x10000, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	e := &pairEnv{mem: mem, io: &fakeIO{}, irq: &countIRQ{}}
	if e.rx, err = vt.NewDriver(mem, size); err != nil {
		t.Fatal(err)
	}
	if e.tx, err = vt.NewDriver(mem, size); err != nil {
		t.Fatal(err)
	}
	if e.rxq, err = e.rx.Queue(features); err != nil {
		t.Fatal(err)
	}
	if e.txq, err = e.tx.Queue(features); err != nil {
		t.Fatal(err)
	}
	e.pair, err = virtio.NewNetQueuePair(virtio.NetQueuePairConfig{
		RX: e.rxq, TX: e.txq, IO: e.io, Features: features, Interrupt: e.irq, Accept: accept,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// addRX posts n receive chains of size bytes each and publishes them.
func (e *pairEnv) addRX(t *testing.T, n int, size uint32) []uint16 {
	t.Helper()
	var heads []uint16
	for i := 0; i < n; i++ {
		h, err := e.rx.AddChain(vt.Writable(size))
		if err != nil {
			t.Fatal(err)
		}
		heads = append(heads, h)
	}
	e.rx.Publish()
	return heads
}

// addTX adds a transmit chain holding the concatenation of parts (one
// descriptor each) and publishes it; it returns the head.
func (e *pairEnv) addTX(t *testing.T, parts ...[]byte) uint16 {
	t.Helper()
	var bufs []vt.Buffer
	for _, p := range parts {
		bufs = append(bufs, vt.Readable(p))
	}
	h, err := e.tx.AddChain(bufs...)
	if err != nil {
		t.Fatal(err)
	}
	e.tx.Publish()
	return h
}

func (e *pairEnv) processTX(t *testing.T) {
	t.Helper()
	for {
		more, err := e.pair.ProcessTX()
		if err != nil {
			t.Fatalf("ProcessTX: %v", err)
		}
		if !more {
			return
		}
	}
}

func (e *pairEnv) processRX(t *testing.T) {
	t.Helper()
	for {
		more, err := e.pair.ProcessRX()
		if err != nil {
			t.Fatalf("ProcessRX: %v", err)
		}
		if !more {
			return
		}
	}
}

// used collects every used element the device published.
func used(d *vt.Driver) []vt.Used {
	var out []vt.Used
	for {
		u, ok := d.GetUsed()
		if !ok {
			return out
		}
		out = append(out, u)
	}
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func isErr(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
