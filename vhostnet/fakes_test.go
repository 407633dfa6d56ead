package vhostnet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// fakeBackend records the requests it gets and can fail chosen ones or
// hang up. It checks the ordering rules a real backend relies on.
type fakeBackend struct {
	mu       sync.Mutex
	name     string
	features uint64
	proto    vhostuser.ProtocolFeatures
	pairs    int
	calls    []string
	// fail maps a request name (optionally "NAME:queue") to the error it
	// returns; failN counts down before the failure applies (0: at once).
	fail    map[string]error
	owner   bool
	gone    bool
	hup     chan struct{}
	kicks   map[uint32]*kvm.EventFD // the caller keeps ownership
	bases   map[uint32]uint32
	enabled map[uint32]bool
	// progress is added to a queue's base by GetVringBase, as if the
	// backend had consumed that many chains.
	progress uint32
	closed   bool
}

func newFakeBackend(name string, pairs int) *fakeBackend {
	return &fakeBackend{
		name:     name,
		features: virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | netFMrgRxbuf | netFMQ | VhostFProtocolFeatures,
		proto:    vhostuser.ProtocolMQ | vhostuser.ProtocolReplyAck,
		pairs:    pairs,
		fail:     map[string]error{},
		hup:      make(chan struct{}),
		kicks:    map[uint32]*kvm.EventFD{},
		bases:    map[uint32]uint32{},
		enabled:  map[uint32]bool{},
	}
}

func (b *fakeBackend) call(name string, q int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.callLocked(name, q)
}

func (b *fakeBackend) callLocked(name string, q int) error {
	tag := name
	if q >= 0 {
		tag = fmt.Sprintf("%s:%d", name, q)
	}
	b.calls = append(b.calls, tag)
	if b.gone || b.closed {
		return fmt.Errorf("%s: %w", tag, ErrDisconnected)
	}
	if err, ok := b.fail[tag]; ok {
		return err
	}
	if err, ok := b.fail[name]; ok {
		return err
	}
	if name != "GetFeatures" && name != "GetProtocolFeatures" && name != "SetProtocolFeatures" && name != "QueuePairs" && name != "SetOwner" && !b.owner {
		return fmt.Errorf("%s before SET_OWNER", tag)
	}
	return nil
}

// hangUp simulates the backend process dying.
func (b *fakeBackend) hangUp() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.gone {
		b.gone = true
		close(b.hup)
	}
}

func (b *fakeBackend) setFail(tag string, err error) {
	b.mu.Lock()
	b.fail[tag] = err
	b.mu.Unlock()
}

func (b *fakeBackend) log() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

func (b *fakeBackend) count(prefix string) int {
	n := 0
	for _, c := range b.log() {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (b *fakeBackend) kick(q uint32) *kvm.EventFD {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.kicks[q]
}

func (b *fakeBackend) Disconnected() <-chan struct{} { return b.hup }

func (b *fakeBackend) SetOwner() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.callLocked("SetOwner", -1); err != nil {
		return err
	}
	if b.owner {
		return errors.New("second SET_OWNER")
	}
	b.owner = true
	return nil
}

func (b *fakeBackend) GetFeatures() (uint64, error) { return b.features, b.call("GetFeatures", -1) }
func (b *fakeBackend) SetFeatures(f uint64) error {
	if err := b.call("SetFeatures", -1); err != nil {
		return err
	}
	if f&^b.features != 0 {
		return fmt.Errorf("SetFeatures %#x: bits %#x not offered", f, f&^b.features)
	}
	return nil
}
func (b *fakeBackend) GetProtocolFeatures() (vhostuser.ProtocolFeatures, error) {
	return b.proto, b.call("GetProtocolFeatures", -1)
}
func (b *fakeBackend) SetProtocolFeatures(p vhostuser.ProtocolFeatures) error {
	return b.call("SetProtocolFeatures", -1)
}
func (b *fakeBackend) QueuePairs() (int, error) { return b.pairs, b.call("QueuePairs", -1) }
func (b *fakeBackend) SetMemTable(r []MemoryRegion) error {
	return b.call("SetMemTable", -1)
}
func (b *fakeBackend) SetVringNum(i, n uint32) error { return b.call("SetVringNum", int(i)) }
func (b *fakeBackend) SetVringAddr(i uint32, a VringAddr) error {
	return b.call("SetVringAddr", int(i))
}
func (b *fakeBackend) SetVringBase(i, base uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.callLocked("SetVringBase", int(i)); err != nil {
		return err
	}
	b.bases[i] = base
	return nil
}
func (b *fakeBackend) GetVringBase(i uint32) (uint32, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.callLocked("GetVringBase", int(i)); err != nil {
		return 0, err
	}
	delete(b.kicks, i)
	return b.bases[i] + b.progress, nil
}
func (b *fakeBackend) SetVringKick(i uint32, ev *kvm.EventFD) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.callLocked("SetVringKick", int(i)); err != nil {
		return err
	}
	if ev == nil || ev.Fd() < 0 {
		return errors.New("SetVringKick: closed eventfd")
	}
	b.kicks[i] = ev
	return nil
}
func (b *fakeBackend) SetVringCall(i uint32, ev *kvm.EventFD) error {
	return b.call("SetVringCall", int(i))
}
func (b *fakeBackend) SetVringEnable(i uint32, on bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.callLocked("SetVringEnable", int(i)); err != nil {
		return err
	}
	b.enabled[i] = on
	return nil
}
func (b *fakeBackend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// fakeConnector hands out backends from next (called for every Connect;
// nil means "refused, try again").
type fakeConnector struct {
	mu    sync.Mutex
	next  func() *fakeBackend
	conns int
}

func (c *fakeConnector) Connect(ctx context.Context) (Backend, error) {
	for {
		c.mu.Lock()
		b := c.next()
		if b != nil {
			c.conns++
		}
		c.mu.Unlock()
		if b != nil {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
func (c *fakeConnector) Reconnects() bool { return true }
func (c *fakeConnector) String() string   { return "fake" }
func (c *fakeConnector) Close() error     { return nil }

// rig is a VM's worth of vhost net devices on the fake kernel: transports
// with ExternalNotifiers over test memory, one fake backend each.
type rig struct {
	t        *testing.T
	kern     *kvmtest.Kernel
	space    *kvm.IoEventSpace
	att      *Attacher
	mem      *vt.Memory
	call     *kvm.EventFD
	pairs    int
	devs     []*NetDevice
	trs      []*virtio.MMIOTransport
	conns    []*fakeConnector
	backends [][]*fakeBackend // per device, every backend it was given
	drivers  [][]*vt.Driver
	queued   []chan *fakeBackend
	irqs     []*fakeIRQ
}

// fakeIRQ records interrupts of the transport (the control queue's; data
// queues signal the call eventfd).
type fakeIRQ struct{ ch chan struct{} }

func (f *fakeIRQ) Trigger() error {
	select {
	case f.ch <- struct{}{}:
	default:
	}
	return nil
}

const rigBase = 0xd000_0000

func newRig(t *testing.T, devices, pairs int, mode CommitMode, assigner kvm.IoeventfdAssigner) *rig {
	t.Helper()
	r := &rig{t: t, pairs: pairs}
	if assigner == nil {
		r.kern = kvmtest.New()
		assigner = r.kern
	}
	r.space = kvm.NewIoEventSpace(assigner)
	var err error
	r.att, err = NewAttacher(AttacherConfig{IoEvents: r.space, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	r.mem, err = vt.NewMemory(0x10_0000, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	r.call, err = kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	shared := []MemoryRegion{SharedRegion(r.mem.Base, r.mem.Buf, nil, 0)}
	for i := range devices {
		ch := make(chan *fakeBackend, 16)
		r.queued = append(r.queued, ch)
		first := newFakeBackend(fmt.Sprintf("dev%d", i), pairs)
		r.backends = append(r.backends, []*fakeBackend{first})
		ch <- first
		idx := i
		conn := &fakeConnector{next: func() *fakeBackend {
			select {
			case b := <-r.queued[idx]:
				return b
			default:
				return nil
			}
		}}
		r.conns = append(r.conns, conn)
		d, err := NewNetDevice(NetConfig{Connector: conn, Attacher: r.att, QueuePairs: pairs, QueueSize: 16, Memory: shared, Call: r.call})
		if err != nil {
			t.Fatal(err)
		}
		irq := &fakeIRQ{ch: make(chan struct{}, 1)}
		r.irqs = append(r.irqs, irq)
		tr, err := virtio.NewMMIOTransport(d, virtio.MMIOConfig{Base: rigBase + uint64(i)*virtio.MMIOWindowSize, Mem: r.mem.Guest, IRQ: irq, IoEvents: r.space, ExternalNotifiers: true, UsedBufferAlways: true})
		if err != nil {
			t.Fatal(err)
		}
		r.devs = append(r.devs, d)
		r.trs = append(r.trs, tr)
		r.drivers = append(r.drivers, nil)
	}
	t.Cleanup(r.close)
	return r
}

// close tears everything down in VM-shutdown order.
func (r *rig) close() {
	r.att.Batch(func() {
		for _, tr := range r.trs {
			tr.Close()
		}
	})
	for _, d := range r.devs {
		d.Close()
	}
	if err := r.att.Close(); err != nil {
		r.t.Errorf("attacher close: %v", err)
	}
	r.call.Close()
}

// newBackend queues the backend device i gets at its next connection.
func (r *rig) newBackend(i int) *fakeBackend {
	b := newFakeBackend(fmt.Sprintf("dev%d.%d", i, len(r.backends[i])), r.pairs)
	r.backends[i] = append(r.backends[i], b)
	r.queued[i] <- b
	return b
}

func (r *rig) backend(i int) *fakeBackend { return r.backends[i][len(r.backends[i])-1] }

// guestFeatures is what a driver acknowledges: everything offered.
func (r *rig) guestFeatures(i int) uint64 { return r.devs[i].Features() | virtio.FeatureVersion1 }

// activate initialises device i as a driver would, every queue ready
// (data queues and the control queue) on fresh rings, without checking
// the outcome.
func (r *rig) activate(i int) {
	r.t.Helper()
	n := 2*r.devs[i].QueuePairs() + 1
	var drivers []*vt.Driver
	for range n {
		d, err := vt.NewDriver(r.mem, 16)
		if err != nil {
			r.t.Fatal(err)
		}
		drivers = append(drivers, d)
	}
	r.drivers[i] = drivers
	vt.InitMMIO(r.trs[i], r.guestFeatures(i), r.drivers[i]...)
}

func (r *rig) status(i int) uint32 { return vt.ReadReg(r.trs[i], vt.RegStatus) }

func (r *rig) reset(i int) { vt.WriteReg(r.trs[i], vt.RegStatus, 0) }

// notifyAddr is device i's QueueNotify address.
func notifyAddr(i int) uint64 {
	return rigBase + uint64(i)*virtio.MMIOWindowSize + virtio.MMIOQueueNotify
}

// kernelEntries counts the fake kernel's registrations per device window.
func (r *rig) kernelEntries() map[int]int {
	out := map[int]int{}
	for _, e := range r.kern.Entries() {
		out[int((e.Addr-rigBase)/virtio.MMIOWindowSize)]++
	}
	return out
}
