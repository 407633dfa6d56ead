package kvm_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
)

// notifyBase is the virtio-mmio QueueNotify register of a device at
// 0xd0000000, the kind of entry the space exists for.
const notifyBase = 0xd0000050

// queue returns the QueueNotify entry of queue q of device d.
func queue(d, q int, ev *kvm.EventFD) kvm.Ioeventfd {
	return kvm.Ioeventfd{Space: kvm.SpaceMMIO, Addr: notifyBase + uint64(d)*0x1000, Len: 4, HasDatamatch: true, Datamatch: uint64(q), Event: ev}
}

// stager is what stages changes: the space itself (each change its own
// transaction) or an open transaction.
type stager interface {
	Add(e kvm.Ioeventfd) (kvm.IoEventID, error)
	Remove(id kvm.IoEventID) error
	RemoveAndClose(id kvm.IoEventID) error
}

var (
	_ stager = (*kvm.IoEventSpace)(nil)
	_ stager = kvm.IoEventTxn(nil)
)

func mustAdd(t testing.TB, s stager, e kvm.Ioeventfd) kvm.IoEventID {
	t.Helper()
	id, err := s.Add(e)
	if err != nil {
		t.Fatalf("Add(%v): %v", e, err)
	}
	return id
}

func mustCommit(t testing.TB, tx kvm.IoEventTxn) {
	t.Helper()
	if err := tx.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// entriesOf returns the committed entries in kvmtest.Entries order.
func entriesOf(s *kvm.IoEventSpace) []kvm.Ioeventfd {
	var out []kvm.Ioeventfd
	for _, c := range s.Committed() {
		out = append(out, c.Entry)
	}
	slices.SortFunc(out, kvmtest.CompareIoeventfd)
	return out
}

func sameEntries(a, b []kvm.Ioeventfd) bool {
	return slices.EqualFunc(a, b, func(x, y kvm.Ioeventfd) bool { return x == y })
}

func fmtEntries(es []kvm.Ioeventfd) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\n  %v", e)
	}
	return b.String()
}

// checkInSync fails t unless the fake kernel holds exactly the space's
// committed set.
func checkInSync(t testing.TB, s *kvm.IoEventSpace, k *kvmtest.Kernel) {
	t.Helper()
	if got, want := k.Entries(), entriesOf(s); !sameEntries(got, want) {
		t.Fatalf("kernel holds:%s\nspace committed:%s", fmtEntries(got), fmtEntries(want))
	}
}

func TestIoEventSpaceNesting(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	ev := kvmtest.NewEventFD(t)

	tx := s.Begin()
	tx.Begin()
	mustAdd(t, tx, queue(0, 0, ev))
	mustCommit(t, tx) // inner: applies nothing
	mustAdd(t, tx, queue(0, 1, ev))
	if c := k.Counts().Calls; c != 0 || s.Len() != 0 {
		t.Fatalf("inside the outer transaction: %d ioctls, %d committed; want 0, 0", c, s.Len())
	}
	mustCommit(t, tx)
	if c := k.Counts(); c.Assigns != 2 || c.Calls != 2 || s.Len() != 2 {
		t.Fatalf("after the outer commit: %+v, %d committed; want 2 assigns, 2 committed", c, s.Len())
	}
	checkInSync(t, s, k)
	if st := s.Stats(); st.Commits != 1 || st.Assigns != 2 || st.Deassigns != 0 || st.Failures != 0 {
		t.Fatalf("stats %+v, want 1 commit, 2 assigns", st)
	}

	// One Commit too many is an error and changes nothing.
	if err := tx.Commit(); !errors.Is(err, kvm.ErrTxnDone) {
		t.Fatalf("Commit of an ended transaction = %v, want ErrTxnDone", err)
	}
	if s.Len() != 2 || k.Counts().Calls != 2 {
		t.Fatal("unbalanced Commit changed the space")
	}
	// And the depth did not go negative: a new transaction still works.
	tx = s.Begin()
	mustAdd(t, tx, queue(0, 2, ev))
	mustCommit(t, tx)
	if s.Len() != 3 {
		t.Fatalf("Len = %d after a pair following an underflow, want 3", s.Len())
	}
	// A commit with nothing staged issues nothing.
	tx = s.Begin()
	mustCommit(t, tx)
	if c := k.Counts().Calls; c != 3 {
		t.Fatalf("empty transaction issued ioctls: %d calls, want 3", c)
	}
}

func TestIoEventSpaceOutsideTransaction(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	ev := kvmtest.NewEventFD(t)

	a := mustAdd(t, s, queue(0, 0, ev))
	if k.Counts().Assigns != 1 || s.Len() != 1 {
		t.Fatalf("Add outside a transaction did not commit: %+v", k.Counts())
	}
	b := mustAdd(t, s, queue(0, 1, ev))
	if a == b || b < a {
		t.Fatalf("IDs %d then %d: want increasing", a, b)
	}
	checkInSync(t, s, k)
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	if k.Counts().Deassigns != 1 || s.Len() != 1 {
		t.Fatalf("Remove outside a transaction did not commit: %+v", k.Counts())
	}
	checkInSync(t, s, k)
	if ev.Fd() < 0 {
		t.Fatal("Remove closed the caller's eventfd")
	}
	// A colliding Add outside a transaction fails at once and is dropped.
	if _, err := s.Add(queue(0, 1, kvmtest.NewEventFD(t))); !errors.Is(err, kvm.ErrIoeventfdCollision) {
		t.Fatalf("colliding Add = %v, want ErrIoeventfdCollision", err)
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d after a failed Add, want 1", s.Len())
	}
	checkInSync(t, s, k)
}

func TestIoEventSpaceUnknownRemove(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	ev := kvmtest.NewEventFD(t)
	id := mustAdd(t, s, queue(0, 0, ev))

	for _, tc := range []struct {
		name string
		op   func(kvm.IoEventID) error
	}{{"Remove", s.Remove}, {"RemoveAndClose", s.RemoveAndClose}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bad := range []kvm.IoEventID{0, id + 1, 1 << 60} {
				err := tc.op(bad)
				if !errors.Is(err, kvm.ErrUnknownIoEvent) {
					t.Errorf("%s(%d) = %v, want ErrUnknownIoEvent", tc.name, bad, err)
				}
				if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("#%d", bad)) {
					t.Errorf("error %q does not name id %d", err, bad)
				}
			}
		})
	}
	// Removing twice in one transaction: the second is unknown.
	tx := s.Begin()
	if err := tx.Remove(id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Remove(id); !errors.Is(err, kvm.ErrUnknownIoEvent) {
		t.Fatalf("second Remove = %v, want ErrUnknownIoEvent", err)
	}
	mustCommit(t, tx)
	if s.Len() != 0 || ev.Fd() < 0 {
		t.Fatalf("Len %d, fd %d: want 0 and the eventfd still open", s.Len(), ev.Fd())
	}
	checkInSync(t, s, k)
}

func TestIoEventSpaceValidation(t *testing.T) {
	ev := kvmtest.NewEventFD(t)
	closed, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	mmio := func(addr uint64, l uint32, has bool, data uint64, e *kvm.EventFD) kvm.Ioeventfd {
		return kvm.Ioeventfd{Space: kvm.SpaceMMIO, Addr: addr, Len: l, HasDatamatch: has, Datamatch: data, Event: e}
	}
	for _, tc := range []struct {
		name    string
		e       kvm.Ioeventfd
		wantErr error // from Add; nil means valid
		// kernelErr is what the kernel's assign says (checked on the fake,
		// which follows the kernel): the space must refuse at least what the
		// kernel refuses.
		kernelErr error
	}{
		{"len 4 datamatch", mmio(0x1000, 4, true, 0xffffffff, ev), nil, nil},
		{"len 8 full datamatch", mmio(0x1000, 8, true, ^uint64(0), ev), nil, nil},
		{"len 1 datamatch 0xff", mmio(0x1000, 1, true, 0xff, ev), nil, nil},
		{"len 2 wildcard", mmio(0x1000, 2, false, 0, ev), nil, nil},
		{"len 0 any length", mmio(0x1000, 0, false, 0, ev), nil, nil},
		{"pio len 0", kvm.Ioeventfd{Space: kvm.SpacePIO, Addr: 0x510, Event: ev}, nil, nil},
		{"top of the address space", mmio(^uint64(0)-4, 4, false, 0, ev), nil, nil},
		{"ends exactly at 2^64", mmio(^uint64(0)-3, 4, false, 0, ev), kvm.ErrInvalidIoeventfd, unix.EINVAL},
		{"len 3", mmio(0x1000, 3, false, 0, ev), kvm.ErrInvalidIoeventfd, unix.EINVAL},
		{"len 16", mmio(0x1000, 16, false, 0, ev), kvm.ErrInvalidIoeventfd, unix.EINVAL},
		{"datamatch with len 0", mmio(0x1000, 0, true, 0, ev), kvm.ErrInvalidIoeventfd, unix.EINVAL},
		{"address wraps", mmio(^uint64(0)-1, 4, false, 0, ev), kvm.ErrInvalidIoeventfd, unix.EINVAL},
		{"unknown space", kvm.Ioeventfd{Space: 7, Addr: 0x1000, Len: 4, Event: ev}, kvm.ErrInvalidIoeventfd, unix.EINVAL},
		{"nil eventfd", mmio(0x1000, 4, false, 0, nil), kvm.ErrInvalidIoeventfd, unix.EBADF},
		{"closed eventfd", mmio(0x1000, 4, false, 0, closed), kvm.ErrClosed, unix.EBADF},
		// The kernel accepts these, but the entry could never match a
		// write: a caller bug the space reports.
		{"len 1 datamatch 0x100", mmio(0x1000, 1, true, 0x100, ev), kvm.ErrInvalidIoeventfd, nil},
		{"len 2 datamatch 0x10000", mmio(0x1000, 2, true, 0x10000, ev), kvm.ErrInvalidIoeventfd, nil},
		{"len 4 datamatch 1<<32", mmio(0x1000, 4, true, 1<<32, ev), kvm.ErrInvalidIoeventfd, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kvmtest.New()
			if err := k.AssignIoeventfd(tc.e); !errors.Is(err, tc.kernelErr) || (tc.kernelErr == nil) != (err == nil) {
				t.Fatalf("fake kernel assign = %v, want %v", err, tc.kernelErr)
			}
			k = kvmtest.New()
			s := kvm.NewIoEventSpace(k)
			for _, inTx := range []bool{false, true} {
				var tx kvm.IoEventTxn
				var stg stager = s
				if inTx {
					tx = s.Begin()
					stg = tx
				}
				id, err := stg.Add(tc.e)
				if tc.wantErr == nil {
					if err != nil {
						t.Fatalf("Add(inTx=%v) = %v, want success", inTx, err)
					}
					if err := stg.Remove(id); err != nil {
						t.Fatal(err)
					}
				} else if !errors.Is(err, tc.wantErr) || !errors.Is(err, kvm.ErrInvalidIoeventfd) {
					t.Fatalf("Add(inTx=%v) = %v, want %v", inTx, err, tc.wantErr)
				}
				if inTx {
					mustCommit(t, tx)
				}
			}
			if tc.wantErr != nil && k.Counts().Calls != 0 {
				t.Fatalf("an invalid entry reached the kernel: %+v", k.Counts())
			}
		})
	}
}

func TestIoEventSpaceCollisions(t *testing.T) {
	e1, e2 := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)
	at := func(space kvm.Space, addr uint64, l uint32, has bool, data uint64, e *kvm.EventFD) kvm.Ioeventfd {
		return kvm.Ioeventfd{Space: space, Addr: addr, Len: l, HasDatamatch: has, Datamatch: data, Event: e}
	}
	const M, P = kvm.SpaceMMIO, kvm.SpacePIO
	for _, tc := range []struct {
		name    string
		a, b    kvm.Ioeventfd
		collide bool
	}{
		{"same key, other eventfd", at(M, 0x50, 4, true, 1, e1), at(M, 0x50, 4, true, 1, e2), true},
		{"same key, same eventfd", at(M, 0x50, 4, true, 1, e1), at(M, 0x50, 4, true, 1, e1), true},
		{"other datamatch", at(M, 0x50, 4, true, 1, e1), at(M, 0x50, 4, true, 2, e1), false},
		{"wildcard and datamatch", at(M, 0x50, 4, false, 0, e1), at(M, 0x50, 4, true, 7, e2), true},
		{"two wildcards", at(M, 0x50, 2, false, 0, e1), at(M, 0x50, 2, false, 0, e2), true},
		{"any length blocks datamatch", at(M, 0x50, 0, false, 0, e1), at(M, 0x50, 8, true, 3, e2), true},
		{"any length blocks other length wildcard", at(P, 0x50, 0, false, 0, e1), at(P, 0x50, 1, false, 0, e2), true},
		{"other lengths", at(M, 0x50, 4, true, 1, e1), at(M, 0x50, 2, true, 1, e2), false},
		{"wildcard, other lengths", at(M, 0x50, 4, false, 0, e1), at(M, 0x50, 2, false, 0, e2), false},
		{"other address", at(M, 0x50, 4, true, 1, e1), at(M, 0x54, 4, true, 1, e2), false},
		{"overlapping ranges are not collisions", at(M, 0x50, 8, false, 0, e1), at(M, 0x54, 4, false, 0, e2), false},
		{"other space", at(M, 0x50, 4, true, 1, e1), at(P, 0x50, 4, true, 1, e2), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The fake kernel agrees on the predicate.
			k := kvmtest.New()
			if err := k.AssignIoeventfd(tc.a); err != nil {
				t.Fatal(err)
			}
			if err := k.AssignIoeventfd(tc.b); errors.Is(err, unix.EEXIST) != tc.collide || (err != nil && !tc.collide) {
				t.Fatalf("fake kernel: second assign = %v, want collision %v", err, tc.collide)
			}

			for _, committedFirst := range []bool{false, true} {
				k := kvmtest.New()
				s := kvm.NewIoEventSpace(k)
				before := k.Counts().Calls
				var ida kvm.IoEventID
				if committedFirst {
					ida = mustAdd(t, s, tc.a)
					before = k.Counts().Calls
				}
				tx := s.Begin()
				if !committedFirst {
					ida = mustAdd(t, tx, tc.a)
				}
				idb := mustAdd(t, tx, tc.b)
				err := tx.Commit()
				if !tc.collide {
					if err != nil {
						t.Fatalf("Commit = %v, want success", err)
					}
					checkInSync(t, s, k)
					continue
				}
				if !errors.Is(err, kvm.ErrIoeventfdCollision) {
					t.Fatalf("Commit = %v, want ErrIoeventfdCollision", err)
				}
				for _, id := range []kvm.IoEventID{ida, idb} {
					if !strings.Contains(err.Error(), fmt.Sprintf("#%d ", id)) {
						t.Errorf("error %q does not name entry #%d", err, id)
					}
				}
				if k.Counts().Calls != before {
					t.Fatalf("a colliding commit issued %d ioctls", k.Counts().Calls-before)
				}
				checkInSync(t, s, k)
				if want := map[bool]int{false: 0, true: 1}[committedFirst]; s.Len() != want {
					t.Fatalf("Len = %d after a refused commit, want %d", s.Len(), want)
				}
				if err := s.Remove(idb); !errors.Is(err, kvm.ErrUnknownIoEvent) {
					t.Fatalf("Remove of an entry of the refused transaction = %v, want ErrUnknownIoEvent", err)
				}
			}
		})
	}
}

// Replacing the eventfd at one (address, length, datamatch) in one
// transaction works only because all deassigns are issued before all
// assigns: the kernel's collision check ignores the eventfd.
func TestIoEventSpaceReplaceEventfd(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	oldEv, newEv := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)
	const n = 8
	ids := make([]kvm.IoEventID, n)
	tx := s.Begin()
	for q := range n {
		ids[q] = mustAdd(t, tx, queue(0, q, oldEv))
	}
	mustCommit(t, tx)

	// The order matters: on the kernel, adding first fails.
	probe := kvmtest.New()
	if err := probe.AssignIoeventfd(queue(0, 3, oldEv)); err != nil {
		t.Fatal(err)
	}
	if err := probe.AssignIoeventfd(queue(0, 3, newEv)); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("kernel assign of a second eventfd at one key = %v, want EEXIST", err)
	}

	var calls []kvmtest.Op
	k.FailFunc(func(c kvmtest.Call) error { calls = append(calls, c.Op); return nil })
	tx = s.Begin()
	for q := range n {
		// Add the new one before removing the old: the space reorders.
		mustAdd(t, tx, queue(0, q, newEv))
		if err := tx.Remove(ids[q]); err != nil {
			t.Fatal(err)
		}
	}
	mustCommit(t, tx)
	want := append(slices.Repeat([]kvmtest.Op{kvmtest.OpDeassign}, n), slices.Repeat([]kvmtest.Op{kvmtest.OpAssign}, n)...)
	if !slices.Equal(calls, want) {
		t.Fatalf("ioctl order %v, want %v", calls, want)
	}
	checkInSync(t, s, k)
	for _, e := range k.Entries() {
		if e.Event != newEv {
			t.Fatalf("kernel still signals the old eventfd for %v", e)
		}
	}
}

func TestIoEventSpaceAddRemoveCancel(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	keep := mustAdd(t, s, queue(0, 0, kvmtest.NewEventFD(t)))
	calls := k.Counts().Calls

	ev := kvmtest.NewEventFD(t)
	closeEv := kvmtest.NewEventFD(t)
	tx := s.Begin()
	a := mustAdd(t, tx, queue(0, 1, ev))
	b := mustAdd(t, tx, queue(0, 2, closeEv))
	if err := tx.Remove(a); err != nil {
		t.Fatal(err)
	}
	if err := tx.RemoveAndClose(b); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, tx)
	if c := k.Counts().Calls - calls; c != 0 {
		t.Fatalf("Add+Remove in one transaction issued %d ioctls, want 0", c)
	}
	if ev.Fd() < 0 {
		t.Fatal("Remove closed the eventfd")
	}
	if closeEv.Fd() >= 0 {
		t.Fatal("RemoveAndClose did not close the eventfd after the commit")
	}
	if got := s.Committed(); len(got) != 1 || got[0].ID != keep {
		t.Fatalf("committed %v, want only #%d", got, keep)
	}
	checkInSync(t, s, k)
}

func TestIoEventSpaceDeferredClose(t *testing.T) {
	t.Run("closed after the commit", func(t *testing.T) {
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		ev := kvmtest.NewEventFD(t)
		id := mustAdd(t, s, queue(0, 0, ev))
		other := mustAdd(t, s, queue(0, 1, kvmtest.NewEventFD(t)))
		if err := ev.Signal(); err != nil { // a kick that nobody handled
			t.Fatal(err)
		}
		tx := s.Begin()
		if err := tx.RemoveAndClose(id); err != nil {
			t.Fatal(err)
		}
		if ev.Fd() < 0 {
			t.Fatal("eventfd closed before the commit (KVM would get EBADF)")
		}
		mustCommit(t, tx)
		if ev.Fd() >= 0 {
			t.Fatal("eventfd still open after the commit that removed it")
		}
		if st := s.Stats(); st.DiscardedKicks != 1 {
			t.Fatalf("DiscardedKicks = %d, want 1", st.DiscardedKicks)
		}
		if got := s.Committed(); len(got) != 1 || got[0].ID != other {
			t.Fatalf("committed %v, want only #%d", got, other)
		}
		checkInSync(t, s, k)
	})
	t.Run("kept open after a failed commit", func(t *testing.T) {
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		ev := kvmtest.NewEventFD(t)
		id := mustAdd(t, s, queue(0, 0, ev))
		tx := s.Begin()
		if err := tx.RemoveAndClose(id); err != nil {
			t.Fatal(err)
		}
		k.FailCall(1, unix.EIO)
		if err := tx.Commit(); !errors.Is(err, unix.EIO) {
			t.Fatalf("Commit = %v, want EIO", err)
		}
		if ev.Fd() < 0 {
			t.Fatal("eventfd closed although the commit failed")
		}
		if s.Len() != 1 {
			t.Fatalf("Len = %d, want the entry still committed", s.Len())
		}
		checkInSync(t, s, k)
		// The retry works, and closes.
		if err := s.RemoveAndClose(id); err != nil {
			t.Fatal(err)
		}
		if ev.Fd() >= 0 || s.Len() != 0 {
			t.Fatalf("after the retry: fd %d, Len %d; want closed and empty", ev.Fd(), s.Len())
		}
		checkInSync(t, s, k)
	})
	t.Run("refused while another entry uses the eventfd", func(t *testing.T) {
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		ev := kvmtest.NewEventFD(t)
		a := mustAdd(t, s, queue(0, 0, ev))
		mustAdd(t, s, queue(0, 1, ev))
		calls := k.Counts().Calls
		if err := s.RemoveAndClose(a); !errors.Is(err, kvm.ErrInvalidIoeventfd) {
			t.Fatalf("RemoveAndClose of a shared eventfd = %v, want ErrInvalidIoeventfd", err)
		}
		if ev.Fd() < 0 || s.Len() != 2 || k.Counts().Calls != calls {
			t.Fatalf("refused RemoveAndClose changed something: fd %d, Len %d, %d ioctls", ev.Fd(), s.Len(), k.Counts().Calls-calls)
		}
	})
	t.Run("eventfd closed by the caller before the commit", func(t *testing.T) {
		// QEMU's 16f6804c46 bug: a close that was not deferred. The space
		// refuses before any ioctl instead of failing with EBADF midway.
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		early, ev := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)
		mustAdd(t, s, queue(0, 0, early))
		id := mustAdd(t, s, queue(0, 1, ev))
		calls := k.Counts().Calls
		tx := s.Begin()
		if err := tx.Remove(id); err != nil {
			t.Fatal(err)
		}
		mustAdd(t, tx, queue(0, 2, kvmtest.NewEventFD(t)))
		ev.Close()
		if err := tx.Commit(); !errors.Is(err, kvm.ErrClosed) {
			t.Fatalf("Commit = %v, want ErrClosed", err)
		}
		if k.Counts().Calls != calls || s.Len() != 2 {
			t.Fatalf("%d ioctls, Len %d; want 0 ioctls and the space unchanged", k.Counts().Calls-calls, s.Len())
		}
	})
}

func TestIoEventSpaceCommitError(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	ev := kvmtest.NewEventFD(t)
	tx := s.Begin()
	var ids []kvm.IoEventID
	for q := range 4 {
		ids = append(ids, mustAdd(t, tx, queue(0, q, ev)))
	}
	k.FailCall(3, unix.ENOSPC)
	err := tx.Commit()
	var ce *kvm.IoEventCommitError
	if !errors.As(err, &ce) || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Commit = %v, want an IoEventCommitError wrapping ENOSPC", err)
	}
	if ce.Op != "assign" || ce.ID != ids[2] || ce.Entry.Datamatch != 2 || ce.Undone != 2 || ce.RollbackErr != nil {
		t.Fatalf("error %+v: want assign of #%d (datamatch 2), 2 undone, rollback fine", ce, ids[2])
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("#%d", ids[2])) || !strings.Contains(err.Error(), "0xd0000050") {
		t.Fatalf("error %q does not name the entry", err)
	}
	if s.Poisoned() || errors.Is(err, kvm.ErrSpacePoisoned) {
		t.Fatal("a successful rollback poisoned the space")
	}
	if st := s.Stats(); st.Failures != 1 || st.Rollbacks != 1 || st.Commits != 0 || st.Assigns != 3 || st.Deassigns != 2 {
		t.Fatalf("stats %+v: want 1 failure, 1 rollback, 3 assigns, 2 deassigns", st)
	}
	if s.Len() != 0 || k.Len() != 0 {
		t.Fatalf("Len %d, kernel %d after rollback; want 0, 0", s.Len(), k.Len())
	}
	for _, id := range ids {
		if err := s.Remove(id); !errors.Is(err, kvm.ErrUnknownIoEvent) {
			t.Fatalf("Remove(#%d) of the failed transaction = %v, want ErrUnknownIoEvent (changes discarded)", id, err)
		}
	}
}

func TestIoEventSpacePoisoning(t *testing.T) {
	t.Run("rollback failure poisons", func(t *testing.T) {
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		ev := kvmtest.NewEventFD(t)
		committed := mustAdd(t, s, queue(1, 0, ev))
		tx := s.Begin()
		for q := range 4 {
			mustAdd(t, tx, queue(0, q, ev))
		}
		k.FailCall(3, unix.ENOSPC) // third assign fails...
		k.FailCall(4, unix.EIO)    // ...and undoing the second one too
		err := tx.Commit()
		if !errors.Is(err, unix.ENOSPC) || !errors.Is(err, unix.EIO) || !errors.Is(err, kvm.ErrSpacePoisoned) {
			t.Fatalf("Commit = %v, want ENOSPC, EIO and ErrSpacePoisoned", err)
		}
		if !s.Poisoned() {
			t.Fatal("Poisoned() = false")
		}
		calls := k.Counts().Calls
		if _, err := s.Add(queue(2, 0, ev)); !errors.Is(err, kvm.ErrSpacePoisoned) {
			t.Fatalf("Add on a poisoned space = %v, want ErrSpacePoisoned", err)
		}
		if err := s.Remove(committed); !errors.Is(err, kvm.ErrSpacePoisoned) {
			t.Fatalf("Remove on a poisoned space = %v, want ErrSpacePoisoned", err)
		}
		tx = s.Begin()
		if err := tx.Commit(); !errors.Is(err, kvm.ErrSpacePoisoned) || !strings.Contains(err.Error(), "poisoned") {
			t.Fatalf("empty Commit on a poisoned space = %v, want ErrSpacePoisoned", err)
		}
		if k.Counts().Calls != calls {
			t.Fatal("a poisoned space issued ioctls")
		}
	})
	t.Run("ENOENT while undoing an assign is not a failure", func(t *testing.T) {
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		ev := kvmtest.NewEventFD(t)
		tx := s.Begin()
		for q := range 3 {
			mustAdd(t, tx, queue(0, q, ev))
		}
		k.FailCall(3, unix.ENOSPC)
		k.FailCall(4, unix.ENOENT)
		if err := tx.Commit(); !errors.Is(err, unix.ENOSPC) || errors.Is(err, kvm.ErrSpacePoisoned) {
			t.Fatalf("Commit = %v, want ENOSPC without poisoning", err)
		}
		if s.Poisoned() {
			t.Fatal("ENOENT during the undo poisoned the space")
		}
	})
	t.Run("undoing a deassign fails", func(t *testing.T) {
		k := kvmtest.New()
		s := kvm.NewIoEventSpace(k)
		ev := kvmtest.NewEventFD(t)
		a := mustAdd(t, s, queue(0, 0, ev))
		b := mustAdd(t, s, queue(0, 1, ev))
		tx := s.Begin()
		tx.Remove(a)
		tx.Remove(b)
		k.FailCall(2, unix.EIO)
		k.FailCall(3, unix.ENOMEM)
		if err := tx.Commit(); !errors.Is(err, unix.ENOMEM) || !errors.Is(err, kvm.ErrSpacePoisoned) {
			t.Fatalf("Commit = %v, want ErrSpacePoisoned wrapping ENOMEM", err)
		}
	})
}

func TestIoEventSpaceConcurrent(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	const workers, per = 4, 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		ev := kvmtest.NewEventFD(t)
		wg.Go(func() {
			var ids []kvm.IoEventID
			var tx kvm.IoEventTxn
			for q := range per {
				if q%8 == 0 {
					tx = s.Begin()
				}
				id, err := tx.Add(queue(w, q, ev))
				if err != nil {
					errs <- err
					return
				}
				ids = append(ids, id)
				if q%8 == 7 {
					if err := tx.Commit(); err != nil {
						errs <- err
						return
					}
				}
			}
			for _, id := range ids[:per/2] {
				if err := s.Remove(id); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s.Len() != workers*per/2 {
		t.Fatalf("Len = %d, want %d", s.Len(), workers*per/2)
	}
	checkInSync(t, s, k)
}

// faultTarget is a kernel (fake or real) behind a failure injector, with a
// way to check what the kernel really holds.
type faultTarget struct {
	inj *kvmtest.Injector
	// check fails t unless every entry of present is registered and none of
	// absent is.
	check func(t *testing.T, present, absent []kvm.Ioeventfd)
}

func fakeTarget() faultTarget {
	k := kvmtest.New()
	return faultTarget{
		inj: kvmtest.Wrap(k),
		check: func(t *testing.T, present, _ []kvm.Ioeventfd) {
			t.Helper()
			want := slices.Clone(present)
			slices.SortFunc(want, kvmtest.CompareIoeventfd)
			if got := k.Entries(); !sameEntries(got, want) {
				t.Fatalf("fake kernel holds:%s\nwant:%s", fmtEntries(got), fmtEntries(want))
			}
		},
	}
}

// faultKinds are the commits the fault matrix breaks at every ioctl.
var faultKinds = []string{"enable", "disable", "replace"}

// runFaultMatrix makes a 64-change commit of the given kind fail at each
// of its 64 ioctls in turn, and checks that the kernel and the space are
// exactly as before, the error wraps the injected errno, and no eventfd is
// closed or leaked.
func runFaultMatrix(t *testing.T, target func() faultTarget, kind string) {
	const n = 64
	rng := rand.New(rand.NewPCG(64, 64))
	for k := 1; k <= n; k++ {
		checkFDs := testutil.CheckFDLeaks(t)
		tg := target()
		s := kvm.NewIoEventSpace(tg.inj)
		evs := make([]*kvm.EventFD, n)
		for i := range evs {
			ev, err := kvm.NewEventFD()
			if err != nil {
				t.Fatal(err)
			}
			evs[i] = ev
		}
		// Devices of 8 queues each; the order of Adds is shuffled.
		entry := func(i int, ev *kvm.EventFD) kvm.Ioeventfd { return queue(i/8, i%8, ev) }
		perm := rng.Perm(n)

		var ids []kvm.IoEventID
		var attempted []kvm.Ioeventfd
		tx := s.Begin()
		switch kind {
		case "enable":
			for _, i := range perm {
				mustAdd(t, tx, entry(i, evs[i]))
				attempted = append(attempted, entry(i, evs[i]))
			}
		case "disable", "replace":
			for _, i := range perm {
				ids = append(ids, mustAdd(t, tx, entry(i, evs[i])))
			}
			mustCommit(t, tx)
			tx = s.Begin()
			if kind == "disable" {
				for _, id := range ids {
					if err := tx.RemoveAndClose(id); err != nil {
						t.Fatal(err)
					}
				}
				break
			}
			// Replace half the eventfds: 32 deassigns, then 32 assigns at
			// the same keys.
			for j, id := range ids {
				i := perm[j]
				if i%2 == 1 {
					continue
				}
				if err := tx.RemoveAndClose(id); err != nil {
					t.Fatal(err)
				}
				ev, err := kvm.NewEventFD()
				if err != nil {
					t.Fatal(err)
				}
				evs = append(evs, ev)
				mustAdd(t, tx, entry(i, ev))
				attempted = append(attempted, entry(i, ev))
			}
		}
		before := s.Committed()
		beforeEntries := entriesOf(s)

		tg.inj.FailCall(uint64(k), unix.ENOSPC)
		err := tx.Commit()
		var ce *kvm.IoEventCommitError
		if !errors.Is(err, unix.ENOSPC) || !errors.As(err, &ce) {
			t.Fatalf("k=%d: Commit = %v, want an IoEventCommitError wrapping ENOSPC", k, err)
		}
		if ce.Undone != k-1 || s.Poisoned() {
			t.Fatalf("k=%d: undone %d ioctls (want %d), poisoned %v", k, ce.Undone, k-1, s.Poisoned())
		}
		if got := s.Committed(); !slices.Equal(got, before) {
			t.Fatalf("k=%d: the space's committed set changed", k)
		}
		tg.check(t, beforeEntries, attempted)
		for i, ev := range evs {
			if ev.Fd() < 0 {
				t.Fatalf("k=%d: eventfd %d closed by a failed commit", k, i)
			}
		}

		// Clean up through the space: everything goes, and the eventfds
		// are closed by RemoveAndClose.
		tx = s.Begin()
		for _, c := range s.Committed() {
			if err := tx.RemoveAndClose(c.ID); err != nil {
				t.Fatal(err)
			}
		}
		mustCommit(t, tx)
		tg.check(t, nil, append(beforeEntries, attempted...))
		for _, ev := range evs {
			ev.Close() // those never committed (enable)
		}
		checkFDs()
	}
}

func TestIoEventSpaceFaultsFake(t *testing.T) {
	for _, kind := range faultKinds {
		t.Run(kind, func(t *testing.T) { runFaultMatrix(t, fakeTarget, kind) })
	}
}

// checkKVM fails t unless the kernel holds every entry of present and none
// of absent, without changing what it holds. KVM cannot list its
// ioeventfds, so it probes:
//   - present: assigning a fresh probe eventfd at the entry's key must fail
//     with EEXIST (something is there). Together with the absent checks,
//     which name the eventfd, this pins the registration down, as the tests
//     using it make every registration of the VM themselves.
//   - absent, eventfd open: a deassign naming the entry's own eventfd must
//     fail with ENOENT.
//   - absent, eventfd closed (it can no longer be named to KVM): the key must
//     be free, so a probe eventfd assigns there; the probes are deassigned
//     afterwards, all together.
//
// Probes that fail or find nothing register nothing. Grouping the ones that
// do matters: on kernels where registration defers its SRCU grace period
// (call_srcu), every deassign that follows an assign waits for that grace
// period (several ms), so alternating assign/deassign pairs are slow.
func checkKVM(t *testing.T, vm *kvm.VM, present, absent []kvm.Ioeventfd) {
	t.Helper()
	probe, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for _, e := range present {
		e.Event = probe
		err := vm.AssignIoeventfd(e)
		if err == nil {
			vm.DeassignIoeventfd(e)
			t.Fatalf("KVM lost %v", e)
		}
		if !errors.Is(err, unix.EEXIST) {
			t.Fatalf("probing %v: %v", e, err)
		}
	}
	var probes []kvm.Ioeventfd
	defer func() {
		for _, e := range probes {
			if err := vm.DeassignIoeventfd(e); err != nil {
				t.Errorf("removing probe %v: %v", e, err)
			}
		}
	}()
	for _, e := range absent {
		if e.Event.Fd() >= 0 {
			err := vm.DeassignIoeventfd(e)
			if err == nil {
				t.Fatalf("KVM still holds %v", e) // and no longer does
			}
			if !errors.Is(err, unix.ENOENT) {
				t.Fatalf("probing %v: %v", e, err)
			}
			continue
		}
		e.Event = probe
		if err := vm.AssignIoeventfd(e); err != nil {
			t.Fatalf("KVM still holds something at %v: %v", e, err)
		}
		probes = append(probes, e)
	}
}

func kvmTarget(t *testing.T) func() faultTarget {
	vm := kvmtest.NewVM(t)
	return func() faultTarget {
		return faultTarget{
			inj: kvmtest.Wrap(vm),
			check: func(t *testing.T, present, absent []kvm.Ioeventfd) {
				t.Helper()
				checkKVM(t, vm, present, absent)
			},
		}
	}
}

func TestIoEventSpaceFaultsKVM(t *testing.T) {
	for _, kind := range faultKinds {
		t.Run(kind, func(t *testing.T) { runFaultMatrix(t, kvmTarget(t), kind) })
	}
}

// A registration the space does not know about (made directly on the VM)
// makes the real kernel refuse an assign midway with EEXIST: the space
// rolls back what it did and the kernel is left as it was.
func TestIoEventSpaceForeignCollisionKVM(t *testing.T) {
	vm := kvmtest.NewVM(t)
	t.Cleanup(testutil.CheckFDLeaks(t))
	const n = 16
	evs := make([]*kvm.EventFD, n)
	for i := range evs {
		evs[i] = kvmtest.NewEventFD(t)
	}
	s := kvm.NewIoEventSpace(vm)
	old := mustAdd(t, s, queue(1, 0, evs[0])) // to be removed by the commit
	for _, pos := range []int{0, 7, n - 1} {
		foreign := queue(0, pos, kvmtest.NewEventFD(t))
		if err := vm.AssignIoeventfd(foreign); err != nil {
			t.Fatal(err)
		}
		tx := s.Begin()
		if err := tx.Remove(old); err != nil {
			t.Fatal(err)
		}
		for q := range n {
			mustAdd(t, tx, queue(0, q, evs[q]))
		}
		err := tx.Commit()
		var ce *kvm.IoEventCommitError
		if !errors.Is(err, unix.EEXIST) || !errors.As(err, &ce) || ce.Entry.Datamatch != uint64(pos) {
			t.Fatalf("pos %d: Commit = %v, want EEXIST from the assign of queue %d", pos, err, pos)
		}
		if ce.Undone != pos+1 { // pos assigns and the deassign of old
			t.Fatalf("pos %d: undid %d ioctls, want %d", pos, ce.Undone, pos+1)
		}
		var attempted []kvm.Ioeventfd
		for q := range n {
			attempted = append(attempted, queue(0, q, evs[q]))
		}
		checkKVM(t, vm, []kvm.Ioeventfd{queue(1, 0, evs[0]), foreign}, attempted)
		// The foreign entry is the one at its key, not one of ours.
		if err := vm.DeassignIoeventfd(queue(0, pos, evs[pos])); !errors.Is(err, unix.ENOENT) {
			t.Fatalf("pos %d: deassign of our queue %d = %v, want ENOENT", pos, pos, err)
		}
		if err := vm.DeassignIoeventfd(foreign); err != nil {
			t.Fatalf("pos %d: foreign entry gone: %v", pos, err)
		}
	}
}

// The fake must say what the real kernel says: same errno (or success) for
// the same sequence of calls.
func TestFakeKernelMatchesKVM(t *testing.T) {
	testutil.RequireKVM(t)
	ev1, ev2 := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)
	closed, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	type op struct {
		assign bool
		e      kvm.Ioeventfd
	}
	at := func(space kvm.Space, addr uint64, l uint32, has bool, data uint64, e *kvm.EventFD) kvm.Ioeventfd {
		return kvm.Ioeventfd{Space: space, Addr: addr, Len: l, HasDatamatch: has, Datamatch: data, Event: e}
	}
	const M, P = kvm.SpaceMMIO, kvm.SpacePIO
	a, d := true, false
	for _, tc := range []struct {
		name string
		ops  []op
	}{
		{"lengths", []op{{a, at(M, 0x10, 3, false, 0, ev1)}, {a, at(M, 0x20, 16, false, 0, ev1)}, {a, at(M, 0x30, 8, false, 0, ev1)}, {a, at(M, 0x40, 0, false, 0, ev1)}}},
		{"datamatch with len 0", []op{{a, at(M, 0x10, 0, true, 0, ev1)}}},
		{"overflow", []op{{a, at(M, ^uint64(0)-3, 4, false, 0, ev1)}, {a, at(M, ^uint64(0)-4, 4, false, 0, ev1)}}},
		{"closed eventfd", []op{{a, at(M, 0x10, 4, false, 0, closed)}, {d, at(M, 0x10, 4, false, 0, closed)}}},
		{"same key, other eventfd", []op{{a, at(M, 0x50, 4, true, 1, ev1)}, {a, at(M, 0x50, 4, true, 1, ev2)}, {a, at(M, 0x50, 4, true, 2, ev2)}}},
		{"wildcard", []op{{a, at(M, 0x50, 4, true, 1, ev1)}, {a, at(M, 0x50, 4, false, 0, ev2)}, {a, at(M, 0x50, 2, false, 0, ev2)}}},
		{"any length", []op{{a, at(P, 0x50, 0, false, 0, ev1)}, {a, at(P, 0x50, 1, true, 1, ev2)}, {a, at(M, 0x50, 1, true, 1, ev2)}}},
		{"deassign", []op{
			{d, at(M, 0x50, 4, true, 1, ev1)},  // unknown
			{a, at(M, 0x50, 4, true, 1, ev1)},  //
			{d, at(M, 0x50, 4, true, 1, ev2)},  // other eventfd
			{d, at(M, 0x50, 4, true, 2, ev1)},  // other datamatch
			{d, at(M, 0x50, 4, false, 0, ev1)}, // wildcard
			{d, at(M, 0x50, 2, true, 1, ev1)},  // other length
			{d, at(P, 0x50, 4, true, 1, ev1)},  // other space
			{d, at(M, 0x50, 4, true, 1, ev1)},  // the one
			{d, at(M, 0x50, 4, true, 1, ev1)},  // gone
		}},
		{"replace needs deassign first", []op{{a, at(M, 0x50, 4, true, 1, ev1)}, {a, at(M, 0x50, 4, true, 1, ev2)}, {d, at(M, 0x50, 4, true, 1, ev1)}, {a, at(M, 0x50, 4, true, 1, ev2)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := kvmtest.NewVM(t)
			fake := kvmtest.New()
			for i, o := range tc.ops {
				call := func(k kvm.IoeventfdAssigner) error {
					if o.assign {
						return k.AssignIoeventfd(o.e)
					}
					return k.DeassignIoeventfd(o.e)
				}
				real, fk := errnoOf(call(vm)), errnoOf(call(fake))
				if real != fk {
					t.Errorf("op %d (assign %v, %+v): KVM says %v, the fake %v", i, o.assign, o.e, real, fk)
				}
			}
		})
	}
}

// errnoOf returns the errno err wraps, 0 for nil, and -1 for an error
// without one.
func errnoOf(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return ^unix.Errno(0)
}

// A kernel that runs out of room (ENOSPC, as on memory pressure) midway
// through a big commit: the space rolls back to the previous set.
func TestIoEventSpaceKernelFull(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	ev := kvmtest.NewEventFD(t)
	for q := range 4 {
		mustAdd(t, s, queue(0, q, ev))
	}
	before := entriesOf(s)
	k.SetLimit(10)
	tx := s.Begin()
	for q := range 16 {
		mustAdd(t, tx, queue(1, q, ev))
	}
	err := tx.Commit()
	var ce *kvm.IoEventCommitError
	if !errors.Is(err, unix.ENOSPC) || !errors.As(err, &ce) || ce.Entry.Datamatch != 6 || ce.Undone != 6 {
		t.Fatalf("Commit = %v, want ENOSPC at the 7th assign (queue 6) with 6 undone", err)
	}
	if got := entriesOf(s); !sameEntries(got, before) {
		t.Fatalf("committed set changed:%s", fmtEntries(got))
	}
	checkInSync(t, s, k)
}
