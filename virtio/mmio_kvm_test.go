package virtio_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// The production registry satisfies the transport's interface.
var _ virtio.IoEvents = (*kvm.IoEventSpace)(nil)

// newSpaceRig is a rig whose IoEvents is a real kvm.IoEventSpace over the
// kvmtest fake kernel (which enforces KVM's collision and EBADF rules).
func newSpaceRig(t *testing.T, sizes []uint16) (*rig, *kvm.IoEventSpace, *kvmtest.Injector, *kvmtest.Kernel) {
	t.Helper()
	r := newRig(t, rigOpts{sizes: sizes})
	k := kvmtest.New()
	inj := kvmtest.Wrap(k)
	space := kvm.NewIoEventSpace(inj)
	tr, err := virtio.NewMMIOTransport(r.dev, virtio.MMIOConfig{Base: mmioBase, Mem: r.mem.Guest, IRQ: r.irq, IoEvents: space})
	if err != nil {
		t.Fatal(err)
	}
	r.tr = tr
	t.Cleanup(func() { tr.Close() })
	return r, space, inj, k
}

func TestMMIOWithIoEventSpace(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	r, space, _, k := newSpaceRig(t, []uint16{64, 64, 64, 64})
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	if k.Len() != 4 || space.Stats().Commits != 1 {
		t.Errorf("kernel holds %d, %d commits; want 4 in one commit", k.Len(), space.Stats().Commits)
	}
	r.write(vt.RegStatus, 0)
	if k.Len() != 0 || space.Len() != 0 || space.Stats().Commits != 2 {
		t.Errorf("after reset: kernel %d, space %d, commits %d", k.Len(), space.Len(), space.Stats().Commits)
	}
	check()
}

func TestMMIOWithIoEventSpaceFailure(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	r, space, inj, k := newSpaceRig(t, []uint16{64, 64, 64, 64})
	inj.FailCall(3, unix.ENOSPC) // the third assign of the commit
	err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...)
	if err == nil {
		t.Fatal("activation succeeded")
	}
	if r.read(vt.RegStatus)&virtio.StatusNeedsReset == 0 || r.tr.Active() {
		t.Errorf("status %#x active %v", r.read(vt.RegStatus), r.tr.Active())
	}
	if k.Len() != 0 || space.Len() != 0 || space.Poisoned() || r.tr.Notifiers() != 0 {
		t.Errorf("kernel %d, space %d, poisoned %v, notifiers %d", k.Len(), space.Len(), space.Poisoned(), r.tr.Notifiers())
	}
	check()
	// The guest resets and tries again.
	for _, d := range r.drivers {
		d.SetAvailIdx(0)
	}
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	if k.Len() != 4 {
		t.Errorf("kernel holds %d after retry", k.Len())
	}
	// A failing deassign at reset keeps the notifiers (still registered)
	// and the next reset retries.
	inj.FailCall(1, unix.EIO)
	r.write(vt.RegStatus, 0)
	if k.Len() != 4 || r.tr.Notifiers() != 4 {
		t.Errorf("after failed release: kernel %d, notifiers %d", k.Len(), r.tr.Notifiers())
	}
	if err := r.tr.Close(); err != nil {
		t.Fatal(err)
	}
	if k.Len() != 0 || r.tr.Notifiers() != 0 {
		t.Errorf("after retried release: kernel %d, notifiers %d", k.Len(), r.tr.Notifiers())
	}
	check()
}

// TestExternalNotifiersOneCommit shows the coordinator path: several
// devices with ExternalNotifiers, whose doorbells an outside coordinator
// registers in one transaction.
func TestExternalNotifiersOneCommit(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	k := kvmtest.New()
	space := kvm.NewIoEventSpace(k)
	mem, err := vt.NewMemory(0x4000_0000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var trs []*virtio.MMIOTransport
	for i := 0; i < 3; i++ {
		tr, err := virtio.NewMMIOTransport(&fakeDevice{id: 1, sizes: []uint16{64, 64}},
			virtio.MMIOConfig{Base: mmioBase + uint64(i)*virtio.MMIOWindowSize, Mem: mem.Guest, IoEvents: space, ExternalNotifiers: true})
		if err != nil {
			t.Fatal(err)
		}
		trs = append(trs, tr)
	}
	var ids []kvm.IoEventID
	tx := space.Begin()
	for _, tr := range trs {
		for _, s := range tr.NotifySpecs() {
			ev, err := kvm.NewEventFD()
			if err != nil {
				t.Fatal(err)
			}
			id, err := tx.Add(s.Ioeventfd(ev))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if k.Len() != 6 || space.Stats().Commits != 1 {
		t.Errorf("kernel %d, commits %d", k.Len(), space.Stats().Commits)
	}
	tx = space.Begin()
	for _, id := range ids {
		if err := tx.RemoveAndClose(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if k.Len() != 0 {
		t.Errorf("kernel %d after detach", k.Len())
	}
	check()
}
