package virtio_test

import (
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/virtio"
)

var (
	errInjected  = errors.New("injected failure")
	errUnknownID = errors.New("unknown ioevent id")
)

// fakeIoEvents implements virtio.IoEvents with the documented semantics of
// kvm.IoEventSpace: owned transactions (Begin waits while another is
// open) that nest, staged changes applied by the outermost Commit, a failed
// commit or an Abort discarding everything staged, and RemoveAndClose
// closing the eventfd only after a successful commit. It refuses entries
// the kernel would see as colliding (same address, length and datamatch)
// and closed eventfds, like KVM.
type fakeIoEvents struct {
	txmu sync.Mutex // held by the open transaction

	mu         sync.Mutex
	cur        *fakeTxn
	depth      int
	begins     int // every Begin call, nested ones included
	commits    int // every Commit call
	aborts     int // every Abort call
	applied    int // outermost commits that applied
	nextID     kvm.IoEventID
	committed  map[kvm.IoEventID]kvm.Ioeventfd
	desired    map[kvm.IoEventID]kvm.Ioeventfd
	closeAfter []*kvm.EventFD
	seen       []*kvm.EventFD // every eventfd passed to Add

	adds       int
	failAddAt  int  // fail the n-th Add (1-based); 0: never
	failCommit bool // fail the next outermost commit
}

type fakeTxn struct{ f *fakeIoEvents }

var errTxnDone = errors.New("fake: transaction ended")

func newFakeIoEvents() *fakeIoEvents {
	return &fakeIoEvents{committed: map[kvm.IoEventID]kvm.Ioeventfd{}, desired: map[kvm.IoEventID]kvm.Ioeventfd{}}
}

func (f *fakeIoEvents) Begin() kvm.IoEventTxn {
	f.txmu.Lock()
	t := &fakeTxn{f: f}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.begins++
	f.cur, f.depth = t, 1
	return t
}

// lock locks f and reports whether t is still open (f stays locked).
func (t *fakeTxn) lock() bool {
	t.f.mu.Lock()
	return t.f.cur == t
}

func (t *fakeTxn) Begin() kvm.IoEventTxn {
	f := t.f
	ok := t.lock()
	defer f.mu.Unlock()
	f.begins++
	if ok {
		f.depth++
	}
	return t
}

func (t *fakeTxn) Commit() error {
	f := t.f
	ok := t.lock()
	f.commits++
	if !ok {
		f.mu.Unlock()
		return errTxnDone
	}
	f.depth--
	if f.depth > 0 {
		f.mu.Unlock()
		return nil
	}
	err := f.applyLocked()
	f.cur = nil
	f.mu.Unlock()
	f.txmu.Unlock()
	return err
}

func (t *fakeTxn) Abort() error {
	f := t.f
	ok := t.lock()
	f.aborts++
	if !ok {
		f.mu.Unlock()
		return errTxnDone
	}
	f.discardLocked()
	f.cur, f.depth = nil, 0
	f.mu.Unlock()
	f.txmu.Unlock()
	return nil
}

func (f *fakeIoEvents) discardLocked() {
	f.desired = maps.Clone(f.committed)
	f.closeAfter = nil
}

func (f *fakeIoEvents) applyLocked() error {
	discard := func(err error) error {
		f.discardLocked()
		return err
	}
	if f.failCommit {
		f.failCommit = false
		return discard(fmt.Errorf("fake commit: %w", errInjected))
	}
	type key struct {
		addr uint64
		len  uint32
		data uint64
	}
	seen := map[key]bool{}
	for _, e := range f.desired {
		k := key{e.Addr, e.Len, e.Datamatch}
		if seen[k] {
			return discard(fmt.Errorf("fake commit: collision at %#x data %d", e.Addr, e.Datamatch))
		}
		seen[k] = true
		if e.Event.Fd() < 0 {
			return discard(errors.New("fake commit: closed eventfd"))
		}
	}
	f.committed = maps.Clone(f.desired)
	f.applied++
	for _, ev := range f.closeAfter {
		ev.Close()
	}
	f.closeAfter = nil
	return nil
}

func (t *fakeTxn) Add(e kvm.Ioeventfd) (kvm.IoEventID, error) {
	f := t.f
	defer f.mu.Unlock()
	if !t.lock() {
		return 0, errTxnDone
	}
	f.seen = append(f.seen, e.Event)
	f.adds++
	if f.adds == f.failAddAt {
		return 0, fmt.Errorf("fake add: %w", errInjected)
	}
	if e.Event == nil || e.Event.Fd() < 0 {
		return 0, errors.New("fake add: closed eventfd")
	}
	f.nextID++
	f.desired[f.nextID] = e
	return f.nextID, nil
}

func (t *fakeTxn) Remove(id kvm.IoEventID) error { return t.remove(id, false) }

func (t *fakeTxn) RemoveAndClose(id kvm.IoEventID) error { return t.remove(id, true) }

func (t *fakeTxn) remove(id kvm.IoEventID, closeFD bool) error {
	f := t.f
	defer f.mu.Unlock()
	if !t.lock() {
		return errTxnDone
	}
	e, ok := f.desired[id]
	if !ok {
		return errUnknownID
	}
	delete(f.desired, id)
	if closeFD {
		f.closeAfter = append(f.closeAfter, e.Event)
	}
	return nil
}

// counts returns the transaction counters.
func (f *fakeIoEvents) counts() (begins, commits, aborts, applied int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.begins, f.commits, f.aborts, f.applied
}

func (f *fakeIoEvents) registered() []kvm.Ioeventfd {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []kvm.Ioeventfd
	for _, e := range f.committed {
		out = append(out, e)
	}
	return out
}

// openSeen returns the eventfds passed to Add that are still open.
func (f *fakeIoEvents) openSeen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, ev := range f.seen {
		if ev.Fd() >= 0 {
			n++
		}
	}
	return n
}

// fakeIRQ counts triggers.
type fakeIRQ struct {
	mu sync.Mutex
	n  int
}

func (i *fakeIRQ) Trigger() error {
	i.mu.Lock()
	i.n++
	i.mu.Unlock()
	return nil
}

func (i *fakeIRQ) count() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.n
}

// fakeDevice records what the transport does to it.
type fakeDevice struct {
	mu          sync.Mutex
	id          uint32
	features    uint64
	sizes       []uint16
	config      [8]byte
	activations []virtio.Activation
	resets      int
	activateErr error
	notified    []int
	// onActivate runs inside Activate (e.g. to process queues).
	onActivate func(a virtio.Activation)
}

func (d *fakeDevice) DeviceID() uint32        { return d.id }
func (d *fakeDevice) Features() uint64        { return d.features }
func (d *fakeDevice) QueueMaxSizes() []uint16 { return d.sizes }

func (d *fakeDevice) ReadConfig(off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range data {
		if o := off + uint64(i); o < uint64(len(d.config)) {
			data[i] = d.config[o]
		} else {
			data[i] = 0
		}
	}
}

func (d *fakeDevice) WriteConfig(off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, b := range data {
		if o := off + uint64(i); o < uint64(len(d.config)) {
			d.config[o] = b
		}
	}
}

func (d *fakeDevice) Activate(a virtio.Activation) error {
	d.mu.Lock()
	d.activations = append(d.activations, a)
	err, fn := d.activateErr, d.onActivate
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if fn != nil {
		fn(a)
	}
	return nil
}

func (d *fakeDevice) Reset() {
	d.mu.Lock()
	d.resets++
	d.mu.Unlock()
}

func (d *fakeDevice) lastActivation() (virtio.Activation, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.activations) == 0 {
		return virtio.Activation{}, false
	}
	return d.activations[len(d.activations)-1], true
}

// notifyingDevice also receives QueueNotify exits.
type notifyingDevice struct{ fakeDevice }

func (d *notifyingDevice) NotifyQueue(q int) {
	d.mu.Lock()
	d.notified = append(d.notified, q)
	d.mu.Unlock()
}
