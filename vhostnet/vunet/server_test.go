package vunet

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/vhostnet"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

const netFeatures = virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.NetFMrgRxbuf |
	virtio.NetFMAC | virtio.NetFCtrlVQ | virtio.NetFMQ | virtio.NetFStatus

// exchange sends one frame from the guest on pair p and checks the host
// gets it, then sends one from the host and checks the guest receives it
// on pair p with a mergeable-buffer header.
func exchange(t *testing.T, v *vm, fn *fakeNet, p int, tag string) {
	t.Helper()
	rx, tx := v.drivers[2*p], v.drivers[2*p+1]
	out := frame("out " + tag)
	if _, err := tx.AddChain(vt.Readable(out)); err != nil {
		t.Fatal(err)
	}
	tx.Publish()
	v.kick(2*p + 1)
	if got := fn.eps[p].hostRead(t); !bytes.Equal(got, out) {
		t.Fatalf("pair %d: host got % x, want % x", p, got, out)
	}
	v.waitUsed(2*p + 1)

	head, err := rx.AddChain(vt.Writable(2048))
	if err != nil {
		t.Fatal(err)
	}
	rx.Publish()
	v.kick(2 * p)
	in := frame("in " + tag)
	fn.eps[p].hostWrite(t, in)
	u := v.waitUsed(2 * p)
	if u.ID != uint32(head) || u.Len != uint32(len(in)) {
		t.Fatalf("pair %d: used %+v, want head %d len %d", p, u, head, len(in))
	}
	got := rx.Written(head, u.Len)
	if n := binary.LittleEndian.Uint16(got[10:]); n != 1 {
		t.Errorf("pair %d: num_buffers %d", p, n)
	}
	if !bytes.Equal(got[virtio.NetHdrSize:], in[virtio.NetHdrSize:]) {
		t.Errorf("pair %d: guest got % x", p, got)
	}
}

// TestSessionDataPath runs govmm's vhost-user front-end against the
// backend: frames cross in both directions on pair 0, pair 1 starts when
// the driver enables it through the control queue (MQ), and its TAP
// queue is attached only then.
func TestSessionDataPath(t *testing.T) {
	t.Cleanup(testutil.CheckFDLeaks(t))
	fn := newFakeNet(t, 2)
	srv, sock, stop := serve(t, t.TempDir(), fn, 2)
	if fn.isEnabled(1) {
		t.Error("pair 1's endpoint attached before any front-end")
	}
	v := newVM(t, sock, 2)
	if v.dev.QueuePairs() != 2 {
		t.Fatalf("device has %d pairs", v.dev.QueuePairs())
	}
	v.start(netFeatures & v.dev.Features())
	exchange(t, v, fn, 0, "pair0")
	if fn.isEnabled(1) {
		t.Error("pair 1 attached before VQ_PAIRS_SET")
	}
	if ack := v.ctrl([]byte{4, 0, 2, 0}); ack != 0 {
		t.Fatalf("VQ_PAIRS_SET ack %d", ack)
	}
	testutil.WaitFor(t, 5*time.Second, "pair 1 attached", func() bool { return fn.isEnabled(1) })
	exchange(t, v, fn, 1, "pair1")
	exchange(t, v, fn, 0, "pair0 again")
	st := srv.Stats()
	if st.Sessions != 1 || st.Pairs.TXPackets != 3 || st.Pairs.RXPackets != 3 {
		t.Errorf("server stats %+v", st)
	}
	// The guest resets the device: the backend stops every pair.
	vt.WriteReg(v.tr, vt.RegStatus, 0)
	testutil.WaitFor(t, 5*time.Second, "pair 1 detached", func() bool { return !fn.isEnabled(1) })
	v.close()
	stop()
}

// TestGarbageFrontend: a peer that sends garbage has its connection
// dropped, and the next front-end is served normally.
func TestGarbageFrontend(t *testing.T) {
	fn := newFakeNet(t, 1)
	srv, sock, _ := serve(t, t.TempDir(), fn, 1)
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0x10, 0, 0},               // unknown request, huge payload
		{byte(vhostuser.ReqSetVringNum), 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0}, // short payload
	} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		c.(*net.UnixConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		if _, err := c.Read(buf); err == nil {
			t.Errorf("garbage % x: got a reply", junk[:8])
		}
		c.Close()
	}
	testutil.WaitFor(t, 5*time.Second, "sessions to end", func() bool { return srv.Stats().Sessions == 3 })
	v := newVM(t, sock, 1)
	v.start(netFeatures & v.dev.Features())
	exchange(t, v, fn, 0, "after garbage")
	if st := srv.Stats(); st.Failed != 3 || st.Sessions != 4 {
		t.Errorf("stats %+v, want 3 failed of 4", st)
	}
}

// TestBackendRestart: the backend dies mid-traffic and a new one starts
// on the same socket; the device reconnects and traffic resumes without a
// guest reset, with no descriptor left over from the dead session.
func TestBackendRestart(t *testing.T) {
	t.Cleanup(testutil.CheckFDLeaks(t))
	dir := t.TempDir()
	fn := newFakeNet(t, 2)
	_, sock, stop := serve(t, dir, fn, 2)
	v := newVM(t, sock, 2)
	v.start(netFeatures & v.dev.Features())
	if ack := v.ctrl([]byte{4, 0, 2, 0}); ack != 0 {
		t.Fatalf("ack %d", ack)
	}
	testutil.WaitFor(t, 5*time.Second, "pair 1", func() bool { return fn.isEnabled(1) })
	for i := range 3 {
		exchange(t, v, fn, i%2, fmt.Sprint("before ", i))
	}
	// Guest buffers in flight when the backend dies.
	rx := v.drivers[0]
	if _, err := rx.AddChain(vt.Writable(2048)); err != nil {
		t.Fatal(err)
	}
	rx.Publish()
	v.kick(0)
	stop()
	testutil.WaitFor(t, 5*time.Second, "device to notice", func() bool { return !v.dev.Connected() })
	if n := v.kern.Len(); n != 0 {
		t.Errorf("%d notifiers registered while the backend is away", n)
	}
	_, _, stop2 := serveAt(t, sock, fn, 2)
	testutil.WaitFor(t, 5*time.Second, "device to restart", func() bool { return v.dev.Attached() })
	if s := vt.ReadReg(v.tr, vt.RegStatus); s&virtio.StatusNeedsReset != 0 {
		t.Fatalf("status %#x", s)
	}
	// The RX buffer posted before the crash is used now.
	in := frame("after crash")
	fn.eps[0].hostWrite(t, in)
	if u := v.waitUsed(0); u.Len != uint32(len(in)) {
		t.Errorf("used %+v", u)
	}
	for i := range 4 {
		exchange(t, v, fn, i%2, fmt.Sprint("after ", i))
	}
	if st := v.dev.Stats(); st.Disconnects != 1 || st.Reconnects != 1 {
		t.Errorf("device stats %+v", st)
	}
	v.close()
	stop2()
}

// TestFrontendServerMode: govmm listens (--net vhost-user=SOCK,server)
// and the backend connects; after the backend's connection drops, the
// device accepts the next one and restarts its queues.
func TestFrontendServerMode(t *testing.T) {
	t.Cleanup(testutil.CheckFDLeaks(t))
	sock := filepath.Join(t.TempDir(), "fe.sock")
	fe, err := vhostnet.ListenUser(sock, vhostuser.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fn := newFakeNet(t, 1)
	srv, err := New(Config{Backend: fn, QueuePairs: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The backend dials the front-end, as DPDK's vhost client mode does.
	dial := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			var c net.Conn
			var err error
			for i := 0; i < 500; i++ {
				if c, err = net.Dial("unix", sock); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil {
				done <- err
				return
			}
			done <- srv.ServeConn(ctx, c.(*net.UnixConn))
		}()
		return cancel, done
	}
	cancel1, done1 := dial()
	v := newVMWith(t, fe, 1)
	v.start(netFeatures & v.dev.Features())
	exchange(t, v, fn, 0, "server mode")
	cancel1()
	<-done1
	testutil.WaitFor(t, 5*time.Second, "disconnect", func() bool { return !v.dev.Connected() })
	cancel2, done2 := dial()
	testutil.WaitFor(t, 5*time.Second, "restart", func() bool { return v.dev.Attached() })
	exchange(t, v, fn, 0, "server mode again")
	v.close()
	cancel2()
	<-done2
}
