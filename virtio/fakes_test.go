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
// kvm.IoEventSpace: nesting Begin/Commit, staged changes applied by the
// outermost Commit, a failed commit discarding everything staged, and
// RemoveAndClose closing the eventfd only after a successful commit. It
// refuses entries the kernel would see as colliding (same address, length
// and datamatch) and closed eventfds, like KVM.
type fakeIoEvents struct {
	mu         sync.Mutex
	depth      int
	begins     int // every Begin call
	commits    int // every Commit call
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

func newFakeIoEvents() *fakeIoEvents {
	return &fakeIoEvents{committed: map[kvm.IoEventID]kvm.Ioeventfd{}, desired: map[kvm.IoEventID]kvm.Ioeventfd{}}
}

func (f *fakeIoEvents) Begin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.begins++
	f.depth++
}

func (f *fakeIoEvents) Commit() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commits++
	return f.commitLocked()
}

func (f *fakeIoEvents) commitLocked() error {
	if f.depth == 0 {
		return errors.New("commit without begin")
	}
	f.depth--
	if f.depth > 0 {
		return nil
	}
	discard := func(err error) error {
		f.desired = maps.Clone(f.committed)
		f.closeAfter = nil
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

func (f *fakeIoEvents) Add(e kvm.Ioeventfd) (kvm.IoEventID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, e.Event)
	f.adds++
	if f.adds == f.failAddAt {
		return 0, fmt.Errorf("fake add: %w", errInjected)
	}
	if e.Event == nil || e.Event.Fd() < 0 {
		return 0, errors.New("fake add: closed eventfd")
	}
	f.depth++
	f.nextID++
	f.desired[f.nextID] = e
	return f.nextID, f.commitLocked()
}

func (f *fakeIoEvents) RemoveAndClose(id kvm.IoEventID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.desired[id]
	if !ok {
		return errUnknownID
	}
	f.depth++
	delete(f.desired, id)
	f.closeAfter = append(f.closeAfter, e.Event)
	return f.commitLocked()
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
