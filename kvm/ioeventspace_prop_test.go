package kvm_test

import (
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
)

// propModel is the reference the space is checked against: plain maps, a
// pairwise collision check, no sorting or diffing.
type propModel struct {
	committed map[kvm.IoEventID]kvm.Ioeventfd
	desired   map[kvm.IoEventID]kvm.Ioeventfd
	closing   []*kvm.EventFD
	depth     int
	lastID    kvm.IoEventID
}

func kernelCollide(a, b kvm.Ioeventfd) bool {
	return a.Space == b.Space && a.Addr == b.Addr &&
		(a.Len == 0 || b.Len == 0 || (a.Len == b.Len && (!a.HasDatamatch || !b.HasDatamatch || a.Datamatch == b.Datamatch)))
}

// refused reports whether the space must refuse the staged set before any
// ioctl: a collision, a change naming a closed eventfd, or an eventfd to
// close that an entry still uses.
func (m *propModel) refused() bool {
	ds := slices.Collect(maps.Values(m.desired))
	for i := range ds {
		for j := i + 1; j < len(ds); j++ {
			if kernelCollide(ds[i], ds[j]) {
				return true
			}
		}
		if slices.Contains(m.closing, ds[i].Event) {
			return true
		}
	}
	for id, e := range m.desired {
		if _, ok := m.committed[id]; !ok && e.Event.Fd() < 0 {
			return true
		}
	}
	for id, e := range m.committed {
		if _, ok := m.desired[id]; !ok && e.Event.Fd() < 0 {
			return true
		}
	}
	return false
}

// changes is the number of ioctls the commit needs.
func (m *propModel) changes() int {
	n := 0
	for id := range m.desired {
		if _, ok := m.committed[id]; !ok {
			n++
		}
	}
	for id := range m.committed {
		if _, ok := m.desired[id]; !ok {
			n++
		}
	}
	return n
}

func propSeed(t *testing.T) uint64 {
	seed := uint64(0x90e7_2024_0816)
	if s := os.Getenv("GOVMM_PROP_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("GOVMM_PROP_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %#x (rerun with GOVMM_PROP_SEED=%#x)", seed, seed)
	return seed
}

// TestIoEventSpaceProperty runs random sequences of nested transactions of
// adds, removes and remove-and-closes, with collisions, eventfds closed
// behind the space's back and injected ioctl failures (some during the
// rollback), and checks after every outermost commit that the outcome is
// the model's and that the fake kernel holds exactly the committed set.
func TestIoEventSpaceProperty(t *testing.T) {
	seed := propSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	var commits, failed, refused, poisoned int
	for iter := range iterations {
		checkFDs := testutil.CheckFDLeaks(t)
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		m := &propModel{committed: map[kvm.IoEventID]kvm.Ioeventfd{}, desired: map[kvm.IoEventID]kvm.Ioeventfd{}}
		var events []*kvm.EventFD
		newEv := func() *kvm.EventFD {
			ev, err := kvm.NewEventFD()
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, ev)
			return ev
		}
		pick := func(mp map[kvm.IoEventID]kvm.Ioeventfd) (kvm.IoEventID, bool) {
			if len(mp) == 0 {
				return 0, false
			}
			ids := slices.Sorted(maps.Keys(mp))
			return ids[rng.IntN(len(ids))], true
		}
		// A small key space so that collisions are frequent.
		randomEntry := func() kvm.Ioeventfd {
			lens := []uint32{0, 1, 2, 4, 4, 4, 8}
			e := kvm.Ioeventfd{Space: kvm.Space(rng.IntN(2)), Addr: 0x1000 + uint64(rng.IntN(3))*4, Len: lens[rng.IntN(len(lens))]}
			if e.Len > 0 && rng.IntN(5) > 0 {
				e.HasDatamatch = true
				e.Datamatch = uint64(rng.IntN(6))
			}
			if len(events) > 0 && rng.IntN(4) == 0 {
				e.Event = events[rng.IntN(len(events))] // shared, maybe closed
			} else {
				e.Event = newEv()
			}
			return e
		}

		// outermost runs op, which ends in an outermost commit, and checks
		// the result against the model.
		outermost := func(step int, op func() error) {
			t.Helper()
			calls := k.Counts().Calls
			changes := m.changes()
			mustRefuse := m.refused()
			failAt, undoFailAt := 0, 0
			if !mustRefuse && changes > 0 && rng.IntN(3) == 0 {
				failAt = 1 + rng.IntN(changes+1) // may land past the end
				k.FailCall(uint64(failAt), unix.ENOSPC)
				if failAt > 1 && rng.IntN(3) == 0 {
					undoFailAt = failAt + 1 + rng.IntN(failAt-1)
					k.FailCall(uint64(undoFailAt), unix.EIO)
				}
			}
			err := op()
			k.ClearFailures()
			ioctls := int(k.Counts().Calls - calls)
			commits++
			switch {
			case mustRefuse:
				refused++
				if err == nil || ioctls != 0 {
					t.Fatalf("iter %d step %d: commit = %v with %d ioctls, want a refusal before any ioctl", iter, step, err, ioctls)
				}
			case failAt > 0 && failAt <= changes:
				failed++
				if !errors.Is(err, unix.ENOSPC) {
					t.Fatalf("iter %d step %d: commit = %v, want the injected ENOSPC (call %d of %d)", iter, step, err, failAt, changes)
				}
				if undoFailAt > 0 {
					poisoned++
					if !errors.Is(err, kvm.ErrSpacePoisoned) || !s.Poisoned() {
						t.Fatalf("iter %d step %d: rollback failed but %v, Poisoned %v", iter, step, err, s.Poisoned())
					}
				} else if ioctls != 2*failAt-1 {
					t.Fatalf("iter %d step %d: %d ioctls for a failure at call %d, want %d", iter, step, ioctls, failAt, 2*failAt-1)
				}
			default:
				if err != nil {
					t.Fatalf("iter %d step %d: commit = %v, want success", iter, step, err)
				}
				if ioctls != changes {
					t.Fatalf("iter %d step %d: %d ioctls for %d changes", iter, step, ioctls, changes)
				}
				m.committed = maps.Clone(m.desired)
				for _, ev := range m.closing {
					if ev.Fd() >= 0 {
						t.Fatalf("iter %d step %d: eventfd of a RemoveAndClose still open after the commit", iter, step)
					}
				}
			}
			m.desired = maps.Clone(m.committed)
			m.closing = nil
			if s.Poisoned() {
				return // the kernel state is unknown by definition
			}
			// The space's committed set is the model's, IDs included...
			got := s.Committed()
			if len(got) != len(m.committed) {
				t.Fatalf("iter %d step %d: %d committed, model %d", iter, step, len(got), len(m.committed))
			}
			for _, c := range got {
				if e, ok := m.committed[c.ID]; !ok || e != c.Entry {
					t.Fatalf("iter %d step %d: committed #%d %v, model %v (%v)", iter, step, c.ID, c.Entry, e, ok)
				}
			}
			// ...and the kernel holds it.
			checkInSync(t, s, k)
		}

		// tx is the open transaction while m.depth > 0, the last ended one
		// (or nil) otherwise; stg stages in it, or in the space outside one.
		var tx kvm.IoEventTxn
		stg := func() stager {
			if m.depth > 0 {
				return tx
			}
			return s
		}
		steps := 5 + rng.IntN(40)
		for step := 0; step < steps && !s.Poisoned(); step++ {
			switch r := rng.IntN(100); {
			case r < 12:
				if m.depth == 0 {
					tx = s.Begin()
				} else {
					tx.Begin()
				}
				m.depth++
			case r < 27:
				if m.depth == 0 {
					if tx == nil {
						continue
					}
					if err := tx.Commit(); !errors.Is(err, kvm.ErrTxnDone) {
						t.Fatalf("iter %d step %d: Commit of an ended transaction = %v", iter, step, err)
					}
					continue
				}
				m.depth--
				if m.depth > 0 {
					if err := tx.Commit(); err != nil {
						t.Fatalf("iter %d step %d: inner Commit = %v", iter, step, err)
					}
					continue
				}
				outermost(step, tx.Commit)
			case r < 65:
				e := randomEntry()
				if e.Event.Fd() < 0 {
					if _, err := stg().Add(e); !errors.Is(err, kvm.ErrInvalidIoeventfd) {
						t.Fatalf("iter %d step %d: Add with a closed eventfd = %v", iter, step, err)
					}
					continue
				}
				m.lastID++
				id := m.lastID
				m.desired[id] = e
				do := func() error {
					got, err := stg().Add(e)
					if err == nil && got != id {
						t.Fatalf("iter %d step %d: Add returned #%d, want #%d (IDs are a counter)", iter, step, got, id)
					}
					return err
				}
				if m.depth > 0 {
					if err := do(); err != nil {
						t.Fatalf("iter %d step %d: Add in a transaction = %v", iter, step, err)
					}
				} else {
					outermost(step, do)
				}
			case r < 95:
				id, ok := pick(m.desired)
				if !ok || rng.IntN(10) == 0 {
					id = m.lastID + 1 + kvm.IoEventID(rng.IntN(3)) // unknown
					if err := stg().Remove(id); !errors.Is(err, kvm.ErrUnknownIoEvent) {
						t.Fatalf("iter %d step %d: Remove(unknown #%d) = %v", iter, step, id, err)
					}
					continue
				}
				withClose := rng.IntN(2) == 0
				ev := m.desired[id].Event
				delete(m.desired, id)
				do := func() error { return stg().Remove(id) }
				if withClose {
					m.closing = append(m.closing, ev)
					do = func() error { return stg().RemoveAndClose(id) }
				}
				if m.depth > 0 {
					if err := do(); err != nil {
						t.Fatalf("iter %d step %d: Remove in a transaction = %v", iter, step, err)
					}
				} else {
					outermost(step, do)
				}
			default:
				// The caller closes an eventfd it should not have (QEMU's
				// 16f6804c46): the space must refuse any commit that would
				// name it, before the ioctl.
				if len(events) > 0 {
					events[rng.IntN(len(events))].Close()
				}
			}
		}
		for m.depth > 0 && !s.Poisoned() {
			m.depth--
			if m.depth > 0 {
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				continue
			}
			outermost(-1, tx.Commit)
		}
		if s.Poisoned() {
			tx := s.Begin()
			if err := tx.Commit(); !errors.Is(err, kvm.ErrSpacePoisoned) {
				t.Fatalf("iter %d: Commit on a poisoned space = %v", iter, err)
			}
		}
		for _, ev := range events {
			ev.Close()
		}
		checkFDs()
		if t.Failed() {
			return
		}
	}
	t.Logf("%d outermost commits: %d refused, %d failed in an ioctl (%d poisoned)", commits, refused, failed, poisoned)
	if refused == 0 || failed == 0 || poisoned == 0 || commits-refused-failed == 0 {
		t.Fatal("the random sequences did not exercise every outcome")
	}
}
