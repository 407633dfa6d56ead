package kvm_test

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
)

func newEventFD(t *testing.T) *kvm.EventFD {
	t.Helper()
	ev, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestIoEventTxnOwned: two independent callers (as two virtio transports,
// or a transport and the vhost attacher's timer, are). While A holds a
// transaction B's Begin waits; A's commit then fails, and B's changes,
// staged after A's transaction ended, are applied by B's own commit. With
// a depth shared between callers B's Commit would return nil without
// applying anything, and A's failure would discard B's entry.
func TestIoEventTxnOwned(t *testing.T) {
	checkFDs := testutil.CheckFDLeaks(t)
	k := kvmtest.New()
	inj := kvmtest.Wrap(k)
	s := kvm.NewIoEventSpace(inj)
	evA1, evA2, evB := newEventFD(t), newEventFD(t), newEventFD(t)

	txA := s.Begin()
	mustAdd(t, txA, queue(0, 0, evA1))
	mustAdd(t, txA, queue(0, 1, evA2))
	inj.FailFunc(func(c kvmtest.Call) error {
		if c.Op == kvmtest.OpAssign && c.Entry.Event == evA2 {
			return unix.EIO
		}
		return nil
	})

	began := make(chan struct{})
	added := make(chan kvm.IoEventID, 1)
	done := make(chan error, 1)
	go func() {
		txB := s.Begin()
		close(began)
		id, err := txB.Add(queue(1, 0, evB))
		if err != nil {
			txB.Abort()
			done <- err
			return
		}
		added <- id
		done <- txB.Commit()
	}()
	// A space-level change is a transaction too: it waits as well.
	spaceDone := make(chan error, 1)
	go func() {
		_, err := s.Add(kvm.Ioeventfd{Space: kvm.SpaceMMIO, Addr: notifyBase + 0x10000, Len: 4, Event: evB})
		spaceDone <- err
	}()
	select {
	case <-began:
		t.Fatal("B's Begin returned while A's transaction was open")
	case err := <-spaceDone:
		t.Fatalf("the space's Add (%v) returned while A's transaction was open", err)
	case <-time.After(50 * time.Millisecond):
	}
	if c := k.Counts().Calls; c != 0 {
		t.Fatalf("%d ioctls before any commit", c)
	}

	if err := txA.Commit(); !errors.Is(err, unix.EIO) {
		t.Fatalf("A's Commit = %v, want the injected EIO", err)
	}
	if err := <-spaceDone; err != nil {
		t.Fatalf("the space's Add after A's transaction = %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("B's Commit = %v", err)
	}
	idB := <-added

	// B's entries are registered, A's are not; the space agrees with the
	// kernel.
	if k.Len() != 2 || s.Len() != 2 {
		t.Fatalf("kernel holds %d, space %d; want B's 2 entries", k.Len(), s.Len())
	}
	for _, e := range k.Entries() {
		if e.Event != evB {
			t.Fatalf("kernel holds %v, which is not B's", e)
		}
	}
	checkInSync(t, s, k)
	if st := s.Stats(); st.Commits != 2 || st.Failures != 1 || st.Rollbacks != 1 {
		t.Fatalf("stats %+v, want 2 commits, 1 failure, 1 rollback", st)
	}

	// Nothing leaks: A's eventfds are still A's (open, closed here); B's
	// go through the space.
	if evA1.Fd() < 0 || evA2.Fd() < 0 {
		t.Fatal("A's failed commit closed an eventfd")
	}
	inj.FailFunc(nil)
	if err := s.Remove(idB); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Committed() {
		if err := s.Remove(c.ID); err != nil {
			t.Fatal(err)
		}
	}
	if k.Len() != 0 || s.Len() != 0 {
		t.Fatalf("kernel %d, space %d after removing everything", k.Len(), s.Len())
	}
	for _, ev := range []*kvm.EventFD{evA1, evA2, evB} {
		if err := ev.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkFDs()
}

// TestIoEventTxnEnded: every method of a transaction that its outermost
// Commit, a failed Commit or Abort has ended returns ErrTxnDone, makes no
// ioctl, changes nothing, and does not hold the space.
func TestIoEventTxnEnded(t *testing.T) {
	ends := []struct {
		name string
		end  func(t *testing.T, tx kvm.IoEventTxn, inj *kvmtest.Injector)
	}{
		{"commit", func(t *testing.T, tx kvm.IoEventTxn, _ *kvmtest.Injector) {
			mustCommit(t, tx)
		}},
		{"failed commit", func(t *testing.T, tx kvm.IoEventTxn, inj *kvmtest.Injector) {
			inj.FailCall(1, unix.ENOSPC)
			if err := tx.Commit(); !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("Commit = %v, want ENOSPC", err)
			}
		}},
		{"abort", func(t *testing.T, tx kvm.IoEventTxn, _ *kvmtest.Injector) {
			if err := tx.Abort(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	uses := []struct {
		name string
		use  func(tx kvm.IoEventTxn, id kvm.IoEventID, ev *kvm.EventFD) error
	}{
		{"Add", func(tx kvm.IoEventTxn, _ kvm.IoEventID, ev *kvm.EventFD) error {
			_, err := tx.Add(queue(2, 0, ev))
			return err
		}},
		{"Remove", func(tx kvm.IoEventTxn, id kvm.IoEventID, _ *kvm.EventFD) error { return tx.Remove(id) }},
		{"RemoveAndClose", func(tx kvm.IoEventTxn, id kvm.IoEventID, _ *kvm.EventFD) error { return tx.RemoveAndClose(id) }},
		{"Commit", func(tx kvm.IoEventTxn, _ kvm.IoEventID, _ *kvm.EventFD) error { return tx.Commit() }},
		{"Abort", func(tx kvm.IoEventTxn, _ kvm.IoEventID, _ *kvm.EventFD) error { return tx.Abort() }},
		{"Begin then Commit", func(tx kvm.IoEventTxn, _ kvm.IoEventID, _ *kvm.EventFD) error { return tx.Begin().Commit() }},
	}
	for _, end := range ends {
		for _, u := range uses {
			t.Run(end.name+"/"+u.name, func(t *testing.T) {
				k := kvmtest.New()
				inj := kvmtest.Wrap(k)
				s := kvm.NewIoEventSpace(inj)
				ev := kvmtest.NewEventFD(t)
				kept := mustAdd(t, s, queue(0, 0, ev))

				tx := s.Begin()
				mustAdd(t, tx, queue(1, 0, ev))
				end.end(t, tx, inj)
				inj.ClearFailures()
				before, calls := s.Committed(), k.Counts().Calls

				if err := u.use(tx, kept, ev); !errors.Is(err, kvm.ErrTxnDone) {
					t.Fatalf("%s on an ended transaction = %v, want ErrTxnDone", u.name, err)
				}
				if c := k.Counts().Calls; c != calls || len(s.Committed()) != len(before) || ev.Fd() < 0 {
					t.Fatalf("%s on an ended transaction changed something: %d -> %d calls, %d -> %d entries, fd %d",
						u.name, calls, c, len(before), s.Len(), ev.Fd())
				}
				// The space is free: a new transaction (here the space's own
				// Remove) does not wait.
				removed := make(chan error, 1)
				go func() { removed <- s.Remove(kept) }()
				select {
				case err := <-removed:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the space is still held by the ended transaction")
				}
				checkInSync(t, s, k)
			})
		}
	}
}

// TestIoEventTxnAbort: Abort discards what the transaction staged, at any
// depth, without an ioctl, and hands RemoveAndClose's eventfds back.
func TestIoEventTxnAbort(t *testing.T) {
	k := kvmtest.New()
	s := kvm.NewIoEventSpace(k)
	ev, ev2 := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)
	kept := mustAdd(t, s, queue(0, 0, ev))
	calls := k.Counts().Calls

	tx := s.Begin()
	added := mustAdd(t, tx, queue(0, 1, ev2))
	inner := tx.Begin()
	if err := inner.RemoveAndClose(kept); err != nil {
		t.Fatal(err)
	}
	if err := inner.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); !errors.Is(err, kvm.ErrTxnDone) {
		t.Fatalf("outer Commit after an inner Abort = %v, want ErrTxnDone", err)
	}
	if c := k.Counts().Calls; c != calls || s.Len() != 1 || ev.Fd() < 0 {
		t.Fatalf("abort: %d calls (want %d), %d entries (want 1), fd %d", c, calls, s.Len(), ev.Fd())
	}
	if err := s.Remove(added); !errors.Is(err, kvm.ErrUnknownIoEvent) {
		t.Fatalf("Remove of an aborted Add = %v, want ErrUnknownIoEvent", err)
	}
	if st := s.Stats(); st.Commits != 1 || st.Failures != 0 {
		t.Fatalf("stats %+v: an abort is neither a commit nor a failure", st)
	}
	// The entries are as before: the kept one can still be removed.
	if err := s.Remove(kept); err != nil {
		t.Fatal(err)
	}
	checkInSync(t, s, k)
}
