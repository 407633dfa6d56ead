package vunet

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

func TestGuardFault(t *testing.T) {
	if err := guardFault(func() error { return nil }); err != nil {
		t.Errorf("no fault: %v", err)
	}
	want := errors.New("plain")
	if err := guardFault(func() error { return want }); err != want {
		t.Errorf("plain error: %v", err)
	}
	defer func() {
		if r := recover(); r != "not a fault" {
			t.Errorf("recovered %v, want the original panic", r)
		}
	}()
	guardFault(func() error { panic("not a fault") })
	t.Error("a panic that is not a memory fault was swallowed")
}

// The front-end truncates the file behind guest memory while the pair
// holds a receive buffer it must give back (returned used, as a chain
// the device gave back after it is in the way); stopping the pair then
// touches unmapped pages. The process survives; the pair is reported
// broken on the rings' error fds and in the log.
func TestSessionStopOnTruncatedMemory(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(t *testing.T, h *session)
	}{
		{"GET_VRING_BASE", func(t *testing.T, h *session) {
			if _, err := h.GetVringBase(0); err != nil {
				t.Errorf("GET_VRING_BASE: %v", err)
			}
		}},
		{"stop", func(t *testing.T, h *session) {
			if err := h.stopPair(0); !errors.Is(err, errGuestFault) {
				t.Errorf("stopPair: %v, want %v", err, errGuestFault)
			}
		}},
		{"SET_MEM_TABLE", func(t *testing.T, h *session) {
			h.SetMemTable(nil, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			fn := newFakeNet(t, 1)
			s, err := New(Config{Backend: fn, QueuePairs: 1, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			ram := newGuestRAM(t, 0x10_0000, 1<<20)
			rx, err := vt.NewDriver(ram.Memory, 8)
			if err != nil {
				t.Fatal(err)
			}
			tx, err := vt.NewDriver(ram.Memory, 8)
			if err != nil {
				t.Fatal(err)
			}
			h := newSession(s)
			t.Cleanup(h.close)
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(h.SetFeatures(virtio.FeatureVersion1 | virtio.NetFMrgRxbuf))
			const uaddr = 0x7f00_0000_0000
			user := func(gpa uint64) uint64 { return uaddr + gpa - ram.Base }
			must(h.SetMemTable([]vhostuser.MemoryRegion{{GuestPhysAddr: ram.Base, Size: uint64(len(ram.Buf)), UserAddr: uaddr}},
				[]*os.File{ram.File}))
			var errFDs, kicks []*kvm.EventFD
			for i, d := range []*vt.Driver{rx, tx} {
				q := uint32(i)
				must(h.SetVringNum(q, uint32(d.Size)))
				must(h.SetVringAddr(vhostuser.VringAddr{Index: q, Desc: user(d.DescAddr), Avail: user(d.AvailAddr), Used: user(d.UsedAddr)}))
				must(h.SetVringBase(q, 0))
				ev, err := kvm.NewEventFD()
				must(err)
				errFDs = append(errFDs, ev)
				must(h.SetVringErr(q, ev)) // the session owns it now
				kick, err := kvm.NewEventFD()
				must(err)
				kicks = append(kicks, kick)
				must(h.SetVringKick(q, kick))
			}
			if h.runs[0] == nil {
				t.Fatalf("pair not started: %s", logs)
			}
			// A 12-byte buffer (header only) then a 4-byte one (unusable,
			// given back at once): a packet takes the first and waits.
			for _, n := range []uint32{12, 4} {
				_, err := rx.AddChain(vt.Writable(n))
				must(err)
			}
			rx.Publish()
			must(kicks[0].Signal())
			fn.eps[0].hostWrite(t, append(make([]byte, virtio.NetHdrSize), make([]byte, 60)...))
			for start := time.Now(); rx.UsedIdx() != 1; {
				if time.Since(start) > 5*time.Second {
					t.Fatalf("the short buffer was not given back (used.idx %d)", rx.UsedIdx())
				}
				time.Sleep(time.Millisecond)
			}
			for _, ev := range errFDs {
				ev.Drain()
			}
			if err := ram.File.Truncate(0); err != nil {
				t.Fatal(err)
			}
			tc.stop(t, h) // must not kill the process
			if h.runs[0] != nil {
				t.Error("pair still running")
			}
			for i, ev := range errFDs {
				if n, err := ev.Drain(); err != nil || n == 0 {
					t.Errorf("queue %d error fd: %d, %v; want it signalled", i, n, err)
				}
			}
			if l := logs.String(); !strings.Contains(l, "guest memory access faulted") {
				t.Errorf("fault not logged:\n%s", l)
			}
		})
	}
}
