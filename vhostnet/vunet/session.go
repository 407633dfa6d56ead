package vunet

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
)

// ring is one virtqueue as the front-end configured it.
type ring struct {
	num      uint32
	addr     vhostuser.VringAddr
	haveAddr bool
	base     uint16 // next available index (SET_VRING_BASE, or where it stopped)
	kick     *kvm.EventFD
	call     atomic.Pointer[kvm.EventFD] // read by the pair's worker
	errFD    atomic.Pointer[kvm.EventFD]
	enabled  bool
}

// started reports whether the ring has its kick fd (it runs once enabled).
func (r *ring) started() bool { return r.kick != nil }

// pairRun is a running queue pair.
type pairRun struct {
	rx, tx *virtio.Queue
	pair   *virtio.NetQueuePair
	worker *virtio.NetPairWorker
}

// session is the Handler of one front-end connection. Serve calls its
// methods from one goroutine; the workers it starts touch only their
// pair, the rings' call/err pointers, and stats under mu.
type session struct {
	s        *Server
	mem      *vhostuser.MemoryMap
	view     *vhostuser.MemoryView // held while any pair runs
	gm       *virtio.GuestMemory
	features uint64
	haveFeat bool
	protoAck bool // VHOST_USER_F_PROTOCOL_FEATURES acknowledged: rings start disabled
	rings    []*ring
	runs     []*pairRun

	mu      sync.Mutex // guards retired and runs' pair pointers for pairStats
	retired virtio.NetPairStats
}

var _ vhostuser.Handler = (*session)(nil)

func newSession(s *Server) *session {
	h := &session{s: s, mem: vhostuser.NewMemoryMap()}
	n := 2 * s.cfg.QueuePairs
	for range n {
		h.rings = append(h.rings, &ring{})
	}
	h.runs = make([]*pairRun, s.cfg.QueuePairs)
	return h
}

// pairStats sums the running pairs and those stopped in this session.
func (h *session) pairStats() virtio.NetPairStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.retired
	for _, r := range h.runs {
		if r != nil {
			st = st.Add(r.pair.Stats())
		}
	}
	return st
}

// close stops everything and releases every resource of the session.
func (h *session) close() {
	for p := range h.runs {
		h.stopPair(p)
	}
	for _, r := range h.rings {
		if r.kick != nil {
			r.kick.Close()
			r.kick = nil
		}
		if ev := r.call.Swap(nil); ev != nil {
			ev.Close()
		}
		if ev := r.errFD.Swap(nil); ev != nil {
			ev.Close()
		}
	}
	h.releaseView()
	h.mem.Close()
}

func (h *session) ringAt(index uint32) (*ring, error) {
	if index >= uint32(len(h.rings)) {
		return nil, fmt.Errorf("queue %d: this backend has %d queues", index, len(h.rings))
	}
	return h.rings[index], nil
}

// GetFeatures implements vhostuser.Handler.
func (h *session) GetFeatures() (uint64, error) { return h.s.offered, nil }

// SetFeatures implements vhostuser.Handler (Serve checked the bits were
// offered). Without VHOST_USER_F_PROTOCOL_FEATURES every ring is enabled
// as soon as it starts.
func (h *session) SetFeatures(f uint64) error {
	if f&virtio.FeatureVersion1 == 0 {
		return errors.New("VIRTIO_F_VERSION_1 is required")
	}
	if err := h.s.cfg.Backend.SetOffloads(virtio.NetGuestOffloads(f)); err != nil {
		return fmt.Errorf("set offloads: %w", err)
	}
	h.features, h.haveFeat = f, true
	h.protoAck = f&vhostuser.FeatureProtocolFeatures != 0
	if !h.protoAck {
		for _, r := range h.rings {
			r.enabled = true
		}
	}
	for p := range h.runs {
		h.maybeStart(p)
	}
	return nil
}

// GetProtocolFeatures implements vhostuser.Handler.
func (h *session) GetProtocolFeatures() (vhostuser.ProtocolFeatures, error) {
	return vhostuser.ProtocolMQ | vhostuser.ProtocolReplyAck, nil
}

// SetProtocolFeatures implements vhostuser.Handler.
func (h *session) SetProtocolFeatures(vhostuser.ProtocolFeatures) error { return nil }

// GetQueueNum implements vhostuser.Handler: the number of queue pairs (as
// QEMU reads it for net devices).
func (h *session) GetQueueNum() (uint64, error) { return uint64(h.s.cfg.QueuePairs), nil }

// SetOwner implements vhostuser.Handler.
func (h *session) SetOwner() error { return nil }

// SetMemTable implements vhostuser.Handler: running pairs are stopped
// while the mappings change, then started again on the new table.
func (h *session) SetMemTable(regions []vhostuser.MemoryRegion, files []*os.File) error {
	var wasRunning []int
	for p, r := range h.runs {
		if r != nil {
			wasRunning = append(wasRunning, p)
			h.stopPair(p)
		}
	}
	h.releaseView()
	err := h.mem.SetTable(regions, files)
	for _, p := range wasRunning {
		h.maybeStart(p)
	}
	return err
}

// SetVringNum implements vhostuser.Handler.
func (h *session) SetVringNum(index, num uint32) error {
	r, err := h.ringAt(index)
	if err != nil {
		return err
	}
	if num == 0 || num&(num-1) != 0 || num > virtio.QueueSizeMax {
		return fmt.Errorf("queue %d: size %d is not a power of two up to %d", index, num, virtio.QueueSizeMax)
	}
	if h.runs[index/2] != nil {
		return fmt.Errorf("queue %d: size change while running", index)
	}
	r.num = num
	return nil
}

// SetVringAddr implements vhostuser.Handler.
func (h *session) SetVringAddr(a vhostuser.VringAddr) error {
	r, err := h.ringAt(a.Index)
	if err != nil {
		return err
	}
	if a.Flags&vhostuser.VringFlagLog != 0 {
		return fmt.Errorf("queue %d: dirty logging is not supported", a.Index)
	}
	if h.runs[a.Index/2] != nil {
		return fmt.Errorf("queue %d: address change while running", a.Index)
	}
	r.addr, r.haveAddr = a, true
	return nil
}

// SetVringBase implements vhostuser.Handler.
func (h *session) SetVringBase(index, base uint32) error {
	r, err := h.ringAt(index)
	if err != nil {
		return err
	}
	if base > 0xffff {
		return fmt.Errorf("queue %d: base %d does not fit a split ring index", index, base)
	}
	if h.runs[index/2] != nil {
		return fmt.Errorf("queue %d: base change while running", index)
	}
	r.base = uint16(base)
	return nil
}

// GetVringBase implements vhostuser.Handler: the ring (and its pair)
// stops; its kick fd is closed.
func (h *session) GetVringBase(index uint32) (uint32, error) {
	r, err := h.ringAt(index)
	if err != nil {
		return 0, err
	}
	h.stopPair(int(index / 2))
	if r.kick != nil {
		r.kick.Close()
		r.kick = nil
	}
	return uint32(r.base), nil
}

// SetVringKick implements vhostuser.Handler: the ring starts.
func (h *session) SetVringKick(index uint32, ev *kvm.EventFD) error {
	r, err := h.ringAt(index)
	if err != nil {
		if ev != nil {
			ev.Close()
		}
		return err
	}
	if ev == nil {
		return fmt.Errorf("queue %d: polling without a kick fd is not supported", index)
	}
	p := int(index / 2)
	h.stopPair(p)
	if r.kick != nil {
		r.kick.Close()
	}
	r.kick = ev
	h.maybeStart(p)
	return nil
}

// SetVringCall implements vhostuser.Handler; a running pair switches to
// the new fd at its next notification.
func (h *session) SetVringCall(index uint32, ev *kvm.EventFD) error {
	r, err := h.ringAt(index)
	if err != nil {
		if ev != nil {
			ev.Close()
		}
		return err
	}
	if old := r.call.Swap(ev); old != nil {
		old.Close()
	}
	return nil
}

// SetVringErr implements vhostuser.Handler.
func (h *session) SetVringErr(index uint32, ev *kvm.EventFD) error {
	r, err := h.ringAt(index)
	if err != nil {
		if ev != nil {
			ev.Close()
		}
		return err
	}
	if old := r.errFD.Swap(ev); old != nil {
		old.Close()
	}
	return nil
}

// SetVringEnable implements vhostuser.Handler.
func (h *session) SetVringEnable(index uint32, on bool) error {
	r, err := h.ringAt(index)
	if err != nil {
		return err
	}
	r.enabled = on
	p := int(index / 2)
	if on {
		h.maybeStart(p)
	} else {
		h.stopPair(p)
	}
	return nil
}

// acquireView maps guest memory for the workers (once, shared by every
// running pair).
func (h *session) acquireView() error {
	if h.view != nil {
		return nil
	}
	v := h.mem.Acquire()
	var regions []virtio.Region
	for _, r := range h.mem.Regions() {
		b, err := v.GuestSlice(r.GuestPhysAddr, r.Size)
		if err != nil {
			v.Release()
			return err
		}
		regions = append(regions, virtio.Region{GPA: r.GuestPhysAddr, Mem: b})
	}
	if len(regions) == 0 {
		v.Release()
		return errors.New("no memory table")
	}
	gm, err := virtio.NewGuestMemory(regions...)
	if err != nil {
		v.Release()
		return err
	}
	h.view, h.gm = v, gm
	return nil
}

// releaseView lets the memory table change (no pair may run).
func (h *session) releaseView() {
	if h.view != nil {
		h.view.Release()
		h.view, h.gm = nil, nil
	}
}

// maybeStart starts pair p if both its rings are set up, started and
// enabled and the features are known. A pair that cannot start because
// of the front-end's configuration (rings outside guest memory, say) is
// logged and left stopped: the front-end learns nothing else, as with a
// broken ring.
func (h *session) maybeStart(p int) {
	if h.runs[p] != nil || !h.haveFeat {
		return
	}
	rx, tx := h.rings[2*p], h.rings[2*p+1]
	for _, r := range []*ring{rx, tx} {
		if !r.started() || !r.enabled || !r.haveAddr || r.num == 0 {
			return
		}
	}
	if err := h.startPair(p); err != nil {
		h.s.log.Warn("vhost-user-net: cannot start queue pair", "pair", p, "err", err)
		h.signalErr(rx)
		h.signalErr(tx)
		if h.runs[p] == nil && !h.anyRunning() {
			h.releaseView()
		}
	}
}

func (h *session) anyRunning() bool {
	for _, r := range h.runs {
		if r != nil {
			return true
		}
	}
	return false
}

func (h *session) signalErr(r *ring) {
	if ev := r.errFD.Load(); ev != nil {
		ev.Signal()
	}
}

// queue builds a device-side queue from r over guest memory.
func (h *session) queue(r *ring) (*virtio.Queue, error) {
	v := h.view
	desc, err := v.UserToGuest(r.addr.Desc)
	if err != nil {
		return nil, fmt.Errorf("descriptor table: %w", err)
	}
	avail, err := v.UserToGuest(r.addr.Avail)
	if err != nil {
		return nil, fmt.Errorf("available ring: %w", err)
	}
	used, err := v.UserToGuest(r.addr.Used)
	if err != nil {
		return nil, fmt.Errorf("used ring: %w", err)
	}
	q := virtio.NewQueue(uint16(min(r.num, 0x8000)))
	q.Size = uint16(r.num)
	q.DescAddr, q.DriverAddr, q.DeviceAddr = desc, avail, used
	q.SetFeatures(h.features)
	q.SetNextAvail(r.base)
	// The front-end's memory could fault (a truncated file): do not let
	// that take the process down.
	err = guardFault(func() error {
		if err := q.Init(h.gm); err != nil {
			return err
		}
		// Continue from what the ring already shows as used (a restart).
		u, err := h.gm.LoadU16Acquire(used + 2)
		if err != nil {
			return err
		}
		q.SetNextUsed(u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return q, nil
}

// errGuestFault: touching guest memory raised SIGBUS or SIGSEGV, as when
// the front-end truncated the file behind it.
var errGuestFault = errors.New("guest memory access faulted")

// guardFault runs fn, which touches guest memory, on the calling
// goroutine with faults turned into panics (debug.SetPanicOnFault) and
// those panics into an error wrapping errGuestFault. The front-end owns
// the files behind guest memory and may shrink them at any time; the
// session goroutine must survive that like the pair workers do. Any other
// panic is not ours to hide and goes on.
func guardFault(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		// Only a memory fault under SetPanicOnFault carries the
		// faulting address.
		if re, ok := r.(interface {
			runtime.Error
			Addr() uintptr
		}); ok {
			err = fmt.Errorf("%w at %#x: %v", errGuestFault, re.Addr(), re)
			return
		}
		panic(r)
	}()
	return fn()
}

// startPair runs pair p: queues, data path, worker, TAP queue attached.
func (h *session) startPair(p int) error {
	if err := h.acquireView(); err != nil {
		return err
	}
	rxR, txR := h.rings[2*p], h.rings[2*p+1]
	rx, err := h.queue(rxR)
	if err != nil {
		return fmt.Errorf("queue %d: %w", 2*p, err)
	}
	tx, err := h.queue(txR)
	if err != nil {
		return fmt.Errorf("queue %d: %w", 2*p+1, err)
	}
	be := h.s.cfg.Backend
	var pair *virtio.NetQueuePair
	// NewNetQueuePair writes the receive ring's suppression field.
	err = guardFault(func() (err error) {
		pair, err = virtio.NewNetQueuePair(virtio.NetQueuePairConfig{
			Index: p, RX: rx, TX: tx, IO: be.Pair(p), Features: h.features,
			Interrupt: callInterrupt{rx: rxR, tx: txR},
		})
		return err
	})
	if err != nil {
		return err
	}
	if err := be.EnablePair(p, true); err != nil {
		return err
	}
	w, err := virtio.StartNetPairWorker(virtio.NetPairWorkerConfig{
		Pair: pair, RXKick: rxR.kick, TXKick: txR.kick, Logger: h.s.log,
		OnError: func(error) {
			h.signalErr(rxR)
			h.signalErr(txR)
		},
	})
	if err != nil {
		if p > 0 {
			be.EnablePair(p, false)
		}
		return err
	}
	h.mu.Lock()
	h.runs[p] = &pairRun{rx: rx, tx: tx, pair: pair, worker: w}
	h.mu.Unlock()
	return nil
}

// stopPair stops pair p if it runs: the worker stops, receive buffers it
// took but did not fill are given back, and each ring's next available
// index is kept as its base. Its TAP queue is detached (pair 0's stays
// attached: a TAP must keep one queue). Giving the buffers back writes
// the used ring; if that fails (a broken ring, or guest memory that
// faults because the front-end truncated it) the pair is reported broken
// on both rings' error fds and the error is returned; the pair is
// stopped all the same.
func (h *session) stopPair(p int) error {
	run := h.runs[p]
	if run == nil {
		return nil
	}
	run.worker.Stop()
	err := guardFault(run.pair.Rewind)
	if err != nil {
		err = fmt.Errorf("queue pair %d: give back receive buffers: %w", p, err)
		h.s.log.Warn("vhost-user-net: queue pair broken while stopping", "pair", p, "err", err)
		h.signalErr(h.rings[2*p])
		h.signalErr(h.rings[2*p+1])
	}
	h.rings[2*p].base = run.rx.NextAvail()
	h.rings[2*p+1].base = run.tx.NextAvail()
	if p > 0 {
		if err := h.s.cfg.Backend.EnablePair(p, false); err != nil {
			h.s.log.Warn("vhost-user-net: detach TAP queue", "pair", p, "err", err)
		}
	}
	h.mu.Lock()
	h.retired = h.retired.Add(run.pair.Stats())
	h.runs[p] = nil
	h.mu.Unlock()
	if !h.anyRunning() {
		h.releaseView()
	}
	return err
}

// callInterrupt signals the pair's call eventfds (the queue pair raises
// one notification for both queues; a spurious one for the other queue
// costs the driver a look at an unchanged ring).
type callInterrupt struct{ rx, tx *ring }

func (c callInterrupt) Signal(uint32) error {
	var errs []error
	a, b := c.rx.call.Load(), c.tx.call.Load()
	if a != nil {
		if err := a.Signal(); err != nil && !errors.Is(err, kvm.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if b != nil && b != a {
		if err := b.Signal(); err != nil && !errors.Is(err, kvm.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
