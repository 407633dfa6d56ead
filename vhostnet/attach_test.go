package vhostnet

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// TestAttachBatchOneCommit starts three 4-pair devices together (as the
// VM does with pre-attached backends): one commit registers all 24
// notifiers, and each backend receives, as kick fds, exactly the eventfds
// KVM signals for its queues.
func TestAttachBatchOneCommit(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	r := newRig(t, 3, 4, CommitBatched, nil)
	r.att.Batch(func() {
		for i := range r.devs {
			r.activate(i)
		}
	})
	if got := r.space.Stats().Commits; got != 1 {
		t.Errorf("commits = %d, want 1", got)
	}
	if got := r.kernelEntries(); got[0] != 8 || got[1] != 8 || got[2] != 8 || len(got) != 3 {
		t.Errorf("kernel registrations per device = %v, want 8 each", got)
	}
	for _, e := range r.kern.Entries() {
		dev := int((e.Addr - rigBase) / virtio.MMIOWindowSize)
		if e.Addr != notifyAddr(dev) || e.Len != 4 || !e.HasDatamatch {
			t.Errorf("registration %v is not a 4-byte datamatch at QueueNotify", e)
		}
		if k := r.backend(dev).kick(uint32(e.Datamatch)); k != e.Event {
			t.Errorf("device %d queue %d: backend kick %p, KVM signals %p", dev, e.Datamatch, k, e.Event)
		}
	}
	for i, d := range r.devs {
		if s := r.status(i); s&virtio.StatusNeedsReset != 0 || s&virtio.StatusDriverOK == 0 {
			t.Errorf("device %d status %#x", i, s)
		}
		st := d.Stats()
		if st.Notifiers != 8 || st.AttachCommits != 1 || st.Attaches != 1 {
			t.Errorf("device %d stats %+v", i, st)
		}
		b := r.backend(i)
		for q := range 8 {
			for _, req := range []string{"SetVringNum", "SetVringBase", "SetVringAddr", "SetVringKick", "SetVringCall"} {
				if n := b.count(fmt.Sprintf("%s:%d", req, q)); n != 1 {
					t.Errorf("device %d: %s:%d sent %d times", i, req, q, n)
				}
			}
			// Before the driver asks for more pairs, only pair 0 runs;
			// the others start disabled, nothing needs saying.
			want := 0
			if q < 2 {
				want = 1
			}
			if n := b.count(fmt.Sprintf("SetVringEnable:%d", q)); n != want || b.enabled[uint32(q)] != (q < 2) {
				t.Errorf("device %d queue %d: %d SET_VRING_ENABLE, enabled = %v", i, q, n, b.enabled[uint32(q)])
			}
		}
		if b.count("SetVringKick:8") != 0 {
			t.Errorf("device %d: the control queue went to the backend", i)
		}
	}

	// Stop them together: one commit removes all 24.
	before := r.space.Stats().Commits
	r.att.Batch(func() {
		for i := range r.devs {
			r.reset(i)
		}
	})
	if got := r.space.Stats().Commits - before; got != 1 {
		t.Errorf("detach commits = %d, want 1", got)
	}
	if n := r.kern.Len(); n != 0 {
		t.Errorf("%d registrations left after detach", n)
	}
	for i, d := range r.devs {
		if st := d.Stats(); st.DetachCommits != 1 || st.Detaches != 1 {
			t.Errorf("device %d stats %+v", i, st)
		}
		if n := r.backend(i).count("GetVringBase"); n != 8 {
			t.Errorf("device %d: %d GET_VRING_BASE, want 8", i, n)
		}
	}
	r.close()
	check()
}

// TestAttachFromDriverOK is the guest's path: DRIVER_OK outside any batch
// attaches that device alone, in one commit.
func TestAttachFromDriverOK(t *testing.T) {
	r := newRig(t, 2, 2, CommitBatched, nil)
	r.activate(1)
	if c := r.space.Stats().Commits; c != 1 {
		t.Errorf("commits %d", c)
	}
	if got := r.kernelEntries(); got[1] != 4 || got[0] != 0 {
		t.Errorf("registrations %v", got)
	}
	if !r.devs[1].Attached() || r.devs[0].Attached() {
		t.Error("wrong device attached")
	}
}

// TestPerQueueMode registers one commit per queue (the baseline the bench
// compares against) with the same end state.
func TestPerQueueMode(t *testing.T) {
	r := newRig(t, 2, 4, CommitPerQueue, nil)
	r.att.Batch(func() {
		r.activate(0)
		r.activate(1)
	})
	if c := r.space.Stats().Commits; c != 16 {
		t.Errorf("commits %d, want 16", c)
	}
	if st := r.devs[0].Stats(); st.AttachCommits != 8 {
		t.Errorf("stats %+v", st)
	}
	r.att.Batch(func() {
		r.reset(0)
		r.reset(1)
	})
	if c := r.space.Stats().Commits; c != 32 || r.kern.Len() != 0 {
		t.Errorf("commits %d, registrations %d", c, r.kern.Len())
	}
}

// TestAttachFailureUnwinds injects failures at each step of the attach
// and checks that only the device concerned fails (NEEDS_RESET), that
// nothing of it stays registered or open, and that the others run.
func TestAttachFailureUnwinds(t *testing.T) {
	refused := &vhostuser.BackendError{Request: vhostuser.ReqSetVringCall, Status: 1}
	cases := []struct {
		name string
		mode CommitMode
		arm  func(r *rig)
		// wantBase: GET_VRING_BASE sent to the failed device to stop what
		// it may have started.
		wantStop bool
	}{
		{"kernel refuses one device's notifier", CommitBatched, func(r *rig) {
			r.kern.FailFunc(func(c kvmtest.Call) error {
				if c.Op == kvmtest.OpAssign && c.Entry.Addr == notifyAddr(1) && c.Entry.Datamatch == 3 {
					return unix.ENOSPC
				}
				return nil
			})
		}, false},
		{"kernel refuses one device's notifier, per-queue", CommitPerQueue, func(r *rig) {
			r.kern.FailFunc(func(c kvmtest.Call) error {
				if c.Op == kvmtest.OpAssign && c.Entry.Addr == notifyAddr(1) && c.Entry.Datamatch == 3 {
					return unix.ENOSPC
				}
				return nil
			})
		}, false},
		{"backend refuses a call fd", CommitBatched, func(r *rig) { r.backend(1).setFail("SetVringCall:3", refused) }, true},
		{"backend refuses the memory table", CommitBatched, func(r *rig) { r.backend(1).setFail("SetMemTable", refused) }, true},
		{"backend refuses enable", CommitPerQueue, func(r *rig) { r.backend(1).setFail("SetVringEnable:1", refused) }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			check := testutil.CheckFDLeaks(t)
			r := newRig(t, 3, 2, c.mode, nil)
			c.arm(r)
			r.att.Batch(func() {
				for i := range r.devs {
					r.activate(i)
				}
			})
			r.kern.ClearFailures()
			got := r.kernelEntries()
			if got[0] != 4 || got[2] != 4 || got[1] != 0 {
				t.Errorf("registrations per device %v, want 4/0/4", got)
			}
			if s := r.status(1); s&virtio.StatusNeedsReset == 0 {
				t.Errorf("failed device status %#x, want NEEDS_RESET", s)
			}
			for _, i := range []int{0, 2} {
				if s := r.status(i); s&virtio.StatusNeedsReset != 0 || !r.devs[i].Attached() {
					t.Errorf("device %d status %#x attached %v", i, s, r.devs[i].Attached())
				}
			}
			if r.devs[1].Attached() {
				t.Error("failed device attached")
			}
			if got := r.backend(1).count("GetVringBase") > 0; got != c.wantStop {
				t.Errorf("failed device stopped = %v, want %v", got, c.wantStop)
			}
			if st := r.att.Stats(); st.Failures != 1 || st.Registered != 8 || st.Stale != 0 {
				t.Errorf("attacher stats %+v", st)
			}
			// The guest resets the failed device and starts it again.
			r.reset(1)
			r.backend(1).setFail("SetVringCall:3", nil)
			delete(r.backend(1).fail, "SetVringCall:3")
			delete(r.backend(1).fail, "SetMemTable")
			delete(r.backend(1).fail, "SetVringEnable:1")
			r.activate(1)
			if s := r.status(1); s&virtio.StatusNeedsReset != 0 || !r.devs[1].Attached() {
				t.Errorf("after reset and restart: status %#x attached %v", s, r.devs[1].Attached())
			}
			if n := r.kern.Len(); n != 12 {
				t.Errorf("%d registrations, want 12", n)
			}
			r.close()
			if n := r.kern.Len(); n != 0 {
				t.Errorf("%d registrations after shutdown", n)
			}
			check()
		})
	}
}

// TestBatchCommitFailureIsolates: when the one commit of a batch fails
// (here on a transient error), each device is retried alone.
func TestBatchCommitFailureIsolates(t *testing.T) {
	r := newRig(t, 3, 1, CommitBatched, nil)
	r.kern.FailCall(3, unix.ENOMEM) // the third assign of the batch commit
	r.att.Batch(func() {
		for i := range r.devs {
			r.activate(i)
		}
	})
	if n := r.kern.Len(); n != 6 {
		t.Errorf("%d registrations, want 6", n)
	}
	for i := range r.devs {
		if !r.devs[i].Attached() {
			t.Errorf("device %d not attached", i)
		}
	}
	if st := r.att.Stats(); st.AttachCommits != 4 {
		t.Errorf("attach commits %d, want 1 failed + 3 single", st.AttachCommits)
	}
}

// TestDetachCommitFailure: a deregistration commit that fails leaves the
// notifiers registered and open (closing them would make every later
// deassign fail with EBADF); the next operation retries and succeeds.
func TestDetachCommitFailure(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	r := newRig(t, 2, 2, CommitBatched, nil)
	r.att.Batch(func() {
		r.activate(0)
		r.activate(1)
	})
	r.kern.FailCall(2, unix.ENOMEM) // second deassign of the detach commit
	r.reset(0)
	if st := r.att.Stats(); st.Stale != 4 {
		t.Fatalf("stale %d, want 4 (%+v)", st.Stale, st)
	}
	if got := r.kernelEntries(); got[0] != 4 {
		t.Errorf("registrations %v: the failed detach must leave device 0's in place", got)
	}
	for _, e := range r.kern.Entries() {
		if e.Event.Fd() < 0 {
			t.Errorf("registered eventfd %v closed", e)
		}
	}
	// The device restarts: the stale entries go first, in their own
	// commit, then the new ones come.
	r.activate(0)
	if st := r.att.Stats(); st.Stale != 0 {
		t.Errorf("stale %d after retry", st.Stale)
	}
	if got := r.kernelEntries(); got[0] != 4 || got[1] != 4 {
		t.Errorf("registrations %v", got)
	}
	r.close()
	check()
}

// TestResetLoop: the guest resets the device and starts it again 100
// times; every cycle is one attach commit and one detach commit, and
// nothing leaks.
func TestResetLoop(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	r := newRig(t, 1, 4, CommitBatched, nil)
	for i := range 100 {
		r.activate(0)
		if n := r.kern.Len(); n != 8 {
			t.Fatalf("cycle %d: %d registrations after start", i, n)
		}
		r.reset(0)
		if n := r.kern.Len(); n != 0 {
			t.Fatalf("cycle %d: %d registrations after reset", i, n)
		}
	}
	if st := r.devs[0].Stats(); st.AttachCommits != 100 || st.DetachCommits != 100 || st.Notifiers != 8 {
		t.Errorf("stats %+v", st)
	}
	if c := r.space.Stats().Commits; c != 200 {
		t.Errorf("commits %d, want 200", c)
	}
	r.close()
	check()
}

// TestControlQueueMQ: the driver's VQ_PAIRS_SET on the control queue
// (served by the VMM) enables that many pairs in the backend.
func TestControlQueueMQ(t *testing.T) {
	r := newRig(t, 1, 4, CommitBatched, nil)
	idle := make(chan struct{})
	r.devs[0].ctrlIdle = idle
	r.activate(0)
	<-idle // the worker's first look at the queue
	b := r.backend(0)
	ctrl := r.drivers[0][8]
	ack, err := sendCtrl(r, 0, ctrl, idle, []byte{ctrlClassMQ, ctrlMQPairsSet, 3, 0})
	if err != nil {
		t.Fatal(err)
	}
	if ack != ctrlOK {
		t.Fatalf("ack %d", ack)
	}
	for q := range 8 {
		if b.enabled[uint32(q)] != (q < 6) {
			t.Errorf("queue %d enabled = %v", q, b.enabled[uint32(q)])
		}
	}
	for _, bad := range [][]byte{{ctrlClassMQ, ctrlMQPairsSet, 5, 0}, {ctrlClassMQ, ctrlMQPairsSet, 0, 0}, {ctrlClassMQ, 7, 1, 0}, {99, 0}, {ctrlClassMQ}} {
		ack, err := sendCtrl(r, 0, ctrl, idle, bad)
		if err != nil {
			t.Fatal(err)
		}
		if ack != ctrlErr {
			t.Errorf("command % x: ack %d, want ERR", bad, ack)
		}
	}
	// The driver resets the device and starts it again on the same
	// connection: the backend kept pairs 1 and 2 enabled, so they are
	// disabled until the driver asks again.
	r.reset(0)
	r.activate(0)
	<-idle
	for q := range 8 {
		if b.enabled[uint32(q)] != (q < 2) {
			t.Errorf("after restart: queue %d enabled = %v", q, b.enabled[uint32(q)])
		}
	}
}

// sendCtrl posts a command (header and data readable, one ack byte
// writable), kicks the control queue through the transport, and waits
// until the worker is idle again (which orders its ring writes before the
// reads here), then returns the ack.
func sendCtrl(r *rig, dev int, d *vt.Driver, idle <-chan struct{}, cmd []byte) (uint8, error) {
	head, err := d.AddChain(vt.Readable(cmd), vt.Writable(1))
	if err != nil {
		return 0, err
	}
	d.Publish()
	vt.WriteReg(r.trs[dev], vt.RegQueueNotify, uint32(r.devs[dev].ctrlIdx))
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		return 0, errors.New("control request not served")
	}
	u, ok := d.GetUsed()
	if !ok {
		return 0, errors.New("no used buffer")
	}
	if u.ID != uint32(head) || u.Len != 1 {
		return 0, fmt.Errorf("used %+v", u)
	}
	return d.Written(head, 1)[0], nil
}

// TestReconnect: the backend of two devices (one process) dies; both stop
// in one commit, come back when it restarts, in one commit, with the
// vring bases taken from the used rings, and without a guest reset. This
// is the sequence that made QEMU abort after it batched vhost-net
// notifiers (EBADF: a notifier closed before the commit that removed it).
func TestReconnect(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	r := newRig(t, 2, 2, CommitBatched, nil)
	r.att.Batch(func() {
		r.activate(0)
		r.activate(1)
	})
	// The guest has seen 5 buffers used on queue 2 of device 0.
	if err := r.mem.Guest.PutU16(r.drivers[0][2].UsedAddr+2, 5); err != nil {
		t.Fatal(err)
	}
	commits := r.space.Stats().Commits
	old := []*fakeBackend{r.backend(0), r.backend(1)}
	old[0].hangUp()
	old[1].hangUp()
	testutil.WaitFor(t, 5*time.Second, "queues stopped", func() bool { return r.kern.Len() == 0 })
	testutil.WaitFor(t, 5*time.Second, "devices detached", func() bool { return !r.devs[0].Connected() && !r.devs[1].Connected() })
	if c := r.space.Stats().Commits - commits; c != 1 {
		t.Errorf("detach commits %d, want 1 for both devices", c)
	}
	if s := r.status(0); s&virtio.StatusNeedsReset != 0 {
		t.Errorf("status %#x after backend loss", s)
	}
	// Kicks while the backend is away exit to the VMM and are dropped.
	vt.WriteReg(r.trs[0], vt.RegQueueNotify, 2)

	commits = r.space.Stats().Commits
	nb := []*fakeBackend{r.newBackend(0), r.newBackend(1)}
	testutil.WaitFor(t, 5*time.Second, "restart", func() bool { return r.devs[0].Attached() && r.devs[1].Attached() })
	if c := r.space.Stats().Commits - commits; c != 1 {
		t.Errorf("restart commits %d, want 1 for both devices", c)
	}
	if got := r.kernelEntries(); got[0] != 4 || got[1] != 4 {
		t.Errorf("registrations %v", got)
	}
	if nb[0].bases[2] != 5 || nb[0].bases[0] != 0 {
		t.Errorf("restart bases %v, want queue 2 at the used index 5", nb[0].bases)
	}
	for i := range 2 {
		if s := r.status(i); s&virtio.StatusNeedsReset != 0 || s&virtio.StatusDriverOK == 0 {
			t.Errorf("device %d status %#x", i, s)
		}
		if st := r.devs[i].Stats(); st.Disconnects != 1 || st.Reconnects != 1 {
			t.Errorf("device %d stats %+v", i, st)
		}
		if n := nb[i].count("SetOwner"); n != 1 {
			t.Errorf("device %d: %d SET_OWNER on the new connection", i, n)
		}
	}
	// A kick now reaches the new backend's eventfd.
	if k := nb[0].kick(0); k == nil {
		t.Fatal("no kick fd")
	} else if _, err := k.Drain(); err != nil {
		t.Fatal(err)
	}

	// A clean stop now asks the live backend for its bases.
	nb[0].progress = 2
	r.reset(0)
	if n := nb[0].count("GetVringBase"); n != 4 {
		t.Errorf("%d GET_VRING_BASE", n)
	}
	r.close()
	check()
}

// TestReconnectWhileInactive: the backend restarts while the guest has
// not started the device; the next DRIVER_OK uses the new connection.
func TestReconnectWhileInactive(t *testing.T) {
	r := newRig(t, 1, 1, CommitBatched, nil)
	r.backend(0).hangUp()
	testutil.WaitFor(t, 5*time.Second, "disconnect", func() bool { return !r.devs[0].Connected() })
	// DRIVER_OK with no backend: accepted, started when it is back.
	r.activate(0)
	if s := r.status(0); s&virtio.StatusNeedsReset != 0 {
		t.Errorf("status %#x", s)
	}
	if r.kern.Len() != 0 {
		t.Error("notifiers registered without a backend")
	}
	r.newBackend(0)
	testutil.WaitFor(t, 5*time.Second, "start on reconnect", func() bool { return r.devs[0].Attached() })
	if r.kern.Len() != 2 {
		t.Errorf("%d registrations", r.kern.Len())
	}
}

// TestBackendDiesDuringStart: a connection lost in the middle of the start
// sequence is not a device failure: the notifiers are unwound and the
// device restarts on the next connection.
func TestBackendDiesDuringStart(t *testing.T) {
	r := newRig(t, 1, 2, CommitBatched, nil)
	b := r.backend(0)
	b.setFail("SetVringAddr:2", fmt.Errorf("peer gone: %w", ErrDisconnected))
	r.activate(0)
	if s := r.status(0); s&virtio.StatusNeedsReset != 0 {
		t.Errorf("status %#x", s)
	}
	if r.kern.Len() != 0 {
		t.Errorf("%d registrations after the failed start", r.kern.Len())
	}
	b.hangUp()
	r.newBackend(0)
	testutil.WaitFor(t, 5*time.Second, "restart", func() bool { return r.devs[0].Attached() })
	if r.kern.Len() != 4 {
		t.Errorf("%d registrations", r.kern.Len())
	}
}

// kvmHasNotifier reports whether vm holds a queue notifier of device dev
// for queue q. KVM cannot list its ioeventfds, so it probes: assigning
// probe at that key collides (EEXIST) exactly when something is there;
// a probe that goes in is taken out again.
func kvmHasNotifier(t *testing.T, vm *kvm.VM, probe *kvm.EventFD, dev int, q uint64) bool {
	t.Helper()
	e := kvm.Ioeventfd{Space: kvm.SpaceMMIO, Addr: notifyAddr(dev), Len: 4, HasDatamatch: true, Datamatch: q, Event: probe}
	err := vm.AssignIoeventfd(e)
	if err == nil {
		if err := vm.DeassignIoeventfd(e); err != nil {
			t.Fatal(err)
		}
		return false
	}
	if !errors.Is(err, unix.EEXIST) {
		t.Fatalf("probe: %v", err)
	}
	return true
}

// TestAttachRealKVM runs the reset loop against a real VM's ioeventfds
// and checks the kernel's state directly: while attached, registering the
// same doorbell again collides (EEXIST); after the reset it succeeds.
func TestAttachRealKVM(t *testing.T) {
	testutil.RequireKVM(t)
	t.Cleanup(testutil.CheckFDLeaks(t)) // after NewVM's cleanups
	vm := kvmtest.NewVM(t)
	r := newRig(t, 1, 2, CommitBatched, vm)
	probe, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	registered := func(q uint64) bool { return kvmHasNotifier(t, vm, probe, 0, q) }
	for cycle := range 100 {
		r.activate(0)
		for q := range uint64(4) {
			if !registered(q) {
				t.Fatalf("cycle %d: queue %d not registered in KVM", cycle, q)
			}
		}
		r.reset(0)
		for q := range uint64(4) {
			if registered(q) {
				t.Fatalf("cycle %d: queue %d still registered in KVM after reset", cycle, q)
			}
		}
	}
	r.close()
}

// TestAttachFailureRealKVM injects failures into a real VM's
// KVM_IOEVENTFD calls: a transient one during a batch (every device is
// retried alone and starts), then a persistent one for one device (only
// it fails), and checks the kernel's registrations directly.
func TestAttachFailureRealKVM(t *testing.T) {
	testutil.RequireKVM(t)
	t.Cleanup(testutil.CheckFDLeaks(t)) // after NewVM's cleanups
	vm := kvmtest.NewVM(t)
	inj := kvmtest.Wrap(vm)
	r := newRig(t, 2, 2, CommitBatched, inj)
	probe, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	registered := func(dev int, q uint64) bool { return kvmHasNotifier(t, vm, probe, dev, q) }
	check := func(want0, want1 bool) {
		t.Helper()
		for q := range uint64(4) {
			if registered(0, q) != want0 || registered(1, q) != want1 {
				t.Fatalf("queue %d: registered %v/%v, want %v/%v", q, registered(0, q), registered(1, q), want0, want1)
			}
		}
	}

	inj.FailCall(6, unix.ENOMEM)
	r.att.Batch(func() {
		r.activate(0)
		r.activate(1)
	})
	check(true, true)
	r.att.Batch(func() {
		r.reset(0)
		r.reset(1)
	})
	check(false, false)

	inj.FailFunc(func(c kvmtest.Call) error {
		if c.Op == kvmtest.OpAssign && c.Entry.Addr == notifyAddr(1) {
			return unix.ENOSPC
		}
		return nil
	})
	r.att.Batch(func() {
		r.activate(0)
		r.activate(1)
	})
	inj.ClearFailures()
	check(true, false)
	if s := r.status(1); s&virtio.StatusNeedsReset == 0 {
		t.Errorf("device 1 status %#x, want NEEDS_RESET", s)
	}
	r.reset(1)
	r.activate(1)
	check(true, true)
	r.close()
	check(false, false)
}

// TestWithoutMQ: a driver that does not negotiate MQ on a multi-pair
// device uses pair 0 only, and its control queue is queue 2.
func TestWithoutMQ(t *testing.T) {
	r := newRig(t, 1, 4, CommitBatched, nil)
	idle := make(chan struct{})
	r.devs[0].ctrlIdle = idle
	var drivers []*vt.Driver
	for range 3 {
		d, err := vt.NewDriver(r.mem, 16)
		if err != nil {
			t.Fatal(err)
		}
		drivers = append(drivers, d)
	}
	r.drivers[0] = drivers
	if err := vt.InitMMIO(r.trs[0], r.guestFeatures(0)&^netFMQ, drivers...); err != nil {
		t.Fatal(err)
	}
	<-idle
	if n := r.kern.Len(); n != 2 {
		t.Errorf("%d notifiers, want 2", n)
	}
	b := r.backend(0)
	if b.count("SetVringKick:2") != 0 {
		t.Error("the control queue went to the backend")
	}
	ack, err := sendCtrl(r, 0, drivers[2], idle, []byte{ctrlClassRx, 0, 1})
	if err != nil || ack != ctrlOK {
		t.Fatalf("RX command on queue 2: ack %d, %v", ack, err)
	}
	if ack, _ := sendCtrl(r, 0, drivers[2], idle, []byte{ctrlClassMQ, ctrlMQPairsSet, 2, 0}); ack != ctrlErr {
		t.Errorf("VQ_PAIRS_SET without MQ: ack %d, want ERR", ack)
	}
}
