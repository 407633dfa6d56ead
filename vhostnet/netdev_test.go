package vhostnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
)

// newDevice creates a device on one fake backend.
func newDevice(t *testing.T, b *fakeBackend, pairs int) (*NetDevice, error) {
	t.Helper()
	att, err := NewAttacher(AttacherConfig{IoEvents: kvm.NewIoEventSpace(kvmtest.New())})
	if err != nil {
		t.Fatal(err)
	}
	call, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { call.Close() })
	given := false
	conn := &fakeConnector{next: func() *fakeBackend {
		if given {
			return nil
		}
		given = true
		return b
	}}
	mem := make([]byte, 1<<16)
	d, err := NewNetDevice(NetConfig{Connector: conn, Attacher: att, QueuePairs: pairs, Memory: []MemoryRegion{SharedRegion(0, mem, nil, 0)}, Call: call})
	if err == nil {
		t.Cleanup(func() { d.Close() })
	}
	return d, err
}

// TestNegotiation: the device offers only what the backend offers, asks
// for protocol features only when bit 30 is there, and honours the
// backend's queue-pair count.
func TestNegotiation(t *testing.T) {
	cases := []struct {
		name      string
		setup     func(b *fakeBackend)
		pairs     int
		wantPairs int
		wantFeat  uint64 // bits that must be offered
		notFeat   uint64 // bits that must not be
		wantCalls []string
		noCalls   []string
		wantErr   string
	}{
		{
			name: "full", pairs: 4, wantPairs: 4,
			wantFeat:  virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | netFMrgRxbuf | netFMQ | netFCtrlVQ | netFMAC | netFStatus,
			notFeat:   VhostFProtocolFeatures | netFCsum,
			wantCalls: []string{"GetFeatures", "GetProtocolFeatures", "SetProtocolFeatures", "QueuePairs", "SetOwner"},
		},
		{
			name: "backend serves fewer pairs", pairs: 8, wantPairs: 2,
			setup:    func(b *fakeBackend) { b.pairs = 2 },
			wantFeat: netFMQ,
		},
		{
			name: "single pair backend", pairs: 4, wantPairs: 1,
			setup:   func(b *fakeBackend) { b.pairs = 1 },
			notFeat: netFMQ,
		},
		{
			name: "no protocol features", pairs: 1, wantPairs: 1,
			setup:   func(b *fakeBackend) { b.features &^= VhostFProtocolFeatures },
			noCalls: []string{"GetProtocolFeatures", "SetProtocolFeatures"},
		},
		{
			name: "offloads pass through", pairs: 1, wantPairs: 1,
			setup:    func(b *fakeBackend) { b.features |= netFCsum | netFGuestCsum | netFHostTSO4 },
			wantFeat: netFCsum | netFGuestCsum | netFHostTSO4,
		},
		{
			name: "no VERSION_1", pairs: 1,
			setup:   func(b *fakeBackend) { b.features &^= virtio.FeatureVersion1 },
			wantErr: "VERSION_1",
		},
		{
			name: "SET_OWNER refused", pairs: 1,
			setup: func(b *fakeBackend) {
				b.fail["SetOwner"] = &vhostuser.BackendError{Request: vhostuser.ReqSetOwner, Status: 1}
			},
			wantErr: "SET_OWNER",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newFakeBackend("b", 4)
			if c.setup != nil {
				c.setup(b)
			}
			d, err := newDevice(t, b, c.pairs)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				if !b.closed {
					t.Error("backend not closed after the failed negotiation")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.QueuePairs() != c.wantPairs || len(d.QueueMaxSizes()) != 2*c.wantPairs+1 {
				t.Errorf("pairs %d (%d queues), want %d", d.QueuePairs(), len(d.QueueMaxSizes()), c.wantPairs)
			}
			f := d.Features()
			if f&c.wantFeat != c.wantFeat || f&c.notFeat != 0 {
				t.Errorf("features %#x: want %#x set and %#x clear", f, c.wantFeat, c.notFeat)
			}
			var cfg [10]byte
			d.ReadConfig(0, cfg[:])
			if got := binary.LittleEndian.Uint16(cfg[8:]); int(got) != c.wantPairs {
				t.Errorf("config max_virtqueue_pairs %d", got)
			}
			if net.HardwareAddr(cfg[:6]).String() != d.MAC().String() || cfg[0]&1 != 0 {
				t.Errorf("config MAC % x, device %v", cfg[:6], d.MAC())
			}
			log := b.log()
			for i, want := range c.wantCalls {
				if i >= len(log) || log[i] != want {
					t.Errorf("calls %v, want %v first", log, c.wantCalls)
					break
				}
			}
			for _, no := range c.noCalls {
				if b.count(no) != 0 {
					t.Errorf("%s sent: %v", no, log)
				}
			}
		})
	}
}

// TestReadConfigBounds: guest config reads outside the space read 0.
func TestReadConfigBounds(t *testing.T) {
	d, err := newDevice(t, newFakeBackend("b", 2), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off uint64
		n   int
	}{{0, 64}, {9, 4}, {10, 2}, {1 << 63, 8}, {^uint64(0), 4}} {
		buf := make([]byte, c.n)
		for i := range buf {
			buf[i] = 0xaa
		}
		d.ReadConfig(c.off, buf)
		for i, v := range buf {
			if o := c.off + uint64(i); (o >= netCfgSize || o < c.off) && v != 0 {
				t.Errorf("offset %#x: byte %d = %#x, want 0", c.off, i, v)
			}
		}
	}
}

// TestConnectionErrorClassification: which Frontend errors mean the
// connection is gone (the device waits for a reconnect) and which are
// refusals (the device fails).
func TestConnectionErrorClassification(t *testing.T) {
	for _, c := range []struct {
		err  error
		conn bool
	}{
		{&vhostuser.BackendError{Request: vhostuser.ReqSetVringCall, Status: 1}, false},
		{fmt.Errorf("x: %w", vhostuser.ErrNotNegotiated), false},
		{errors.New("local check"), false},
		{fmt.Errorf("read: %w", io.EOF), true},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("x: %w", vhostuser.ErrBroken), true},
		{fmt.Errorf("x: %w", vhostuser.ErrClosed), true},
		{&vhostuser.ProtocolError{Reason: "bad reply"}, true},
		{&net.OpError{Op: "write", Err: os.NewSyscallError("sendmsg", syscall.EPIPE)}, true},
		{fmt.Errorf("x: %w", syscall.ECONNRESET), true},
		{fmt.Errorf("x: %w", os.ErrDeadlineExceeded), true},
	} {
		if got := connectionError(c.err); got != c.conn {
			t.Errorf("connectionError(%v) = %v, want %v", c.err, got, c.conn)
		}
	}
}

// TestKernelNetMissing: without /dev/vhost-net, opening kernel vhost-net
// fails with an error that says so.
func TestKernelNetMissing(t *testing.T) {
	if _, err := os.Stat(VhostNetPath); err == nil {
		t.Skip(VhostNetPath + " exists on this host")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = OpenKernelNet([]syscall.Conn{f})
	if !errors.Is(err, ErrNoVhostNet) || !strings.Contains(err.Error(), "vhost-net") {
		t.Fatalf("err %v, want ErrNoVhostNet", err)
	}
}

// TestKernelNet drives the kernel vhost-net ioctls (without a TAP: the
// queue is bound to a socket it cannot use, so only the control path is
// checked): owner, features, memory table, a ring, GET_VRING_BASE.
func TestKernelNet(t *testing.T) {
	testutil.RequireVhostNet(t)
	defer testutil.CheckFDLeaks(t)()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := OpenKernelNet([]syscall.Conn{f})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.SetOwner(); err != nil {
		t.Fatal(err)
	}
	feat, err := k.GetFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if feat&virtio.FeatureVersion1 == 0 || feat&vhostNetFVirtioHdr != 0 {
		t.Errorf("features %#x", feat)
	}
	if err := k.SetFeatures(feat & (virtio.FeatureVersion1 | netFMrgRxbuf)); err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, 1<<16)
	if err := k.SetMemTable([]MemoryRegion{SharedRegion(0, mem, nil, 0)}); err != nil {
		t.Fatal(err)
	}
	ev, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	r := SharedRegion(0, mem, nil, 0)
	steps := []error{
		k.SetVringNum(1, 64),
		k.SetVringBase(1, 7),
		k.SetVringAddr(1, VringAddr{Desc: r.UserAddr, Avail: r.UserAddr + 0x1000, Used: r.UserAddr + 0x2000}),
		k.SetVringKick(1, ev),
		k.SetVringCall(1, ev),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if base, err := k.GetVringBase(1); err != nil || base != 7 {
		t.Errorf("GetVringBase = %d, %v; want 7", base, err)
	}
	if err := k.SetVringNum(2, 64); !errors.Is(err, ErrUnsupported) {
		t.Errorf("queue of a missing pair: %v", err)
	}
}

// FuzzCtrl feeds arbitrary control-queue requests to the parser and the
// decision: nothing panics, and only well-formed VQ_PAIRS_SET requests in
// range change the pair count.
func FuzzCtrl(f *testing.F) {
	f.Add([]byte{ctrlClassMQ, ctrlMQPairsSet, 2, 0}, uint64(netFMQ), 4)
	f.Add([]byte{ctrlClassMQ, ctrlMQPairsSet, 0, 0}, uint64(netFMQ), 4)
	f.Add([]byte{ctrlClassMQ, ctrlMQPairsSet, 0xff, 0xff}, uint64(netFMQ), 32)
	f.Add([]byte{ctrlClassMQ}, uint64(netFMQ), 1)
	f.Add([]byte{ctrlClassRx, 0, 1}, uint64(0), 1)
	f.Add([]byte{ctrlClassMAC, 1, 1, 2, 3, 4, 5, 6}, uint64(0), 1)
	f.Add([]byte{}, uint64(0), 0)
	f.Fuzz(func(t *testing.T, req []byte, features uint64, maxPairs int) {
		c, err := parseCtrl(req)
		if err != nil {
			if len(req) >= 2 {
				t.Fatalf("parse % x: %v", req, err)
			}
			return
		}
		d := decideCtrl(c, features, maxPairs)
		if d.ack != ctrlOK && d.ack != ctrlErr {
			t.Fatalf("ack %d", d.ack)
		}
		if d.pairs != 0 {
			n := int(binary.LittleEndian.Uint16(req[2:]))
			if req[0] != ctrlClassMQ || req[1] != ctrlMQPairsSet || features&netFMQ == 0 || n != d.pairs || n < 1 || n > maxPairs || d.ack != ctrlOK {
				t.Fatalf("request % x features %#x max %d: pairs %d ack %d", req, features, maxPairs, d.pairs, d.ack)
			}
		}
	})
}
