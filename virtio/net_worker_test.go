package virtio_test

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// sockIO is a PollablePacketIO over one end of a SOCK_SEQPACKET socket
// pair (message boundaries are packet boundaries, like a TAP queue); the
// test plays the host on the other end.
type sockIO struct {
	f    *os.File
	rc   syscall.RawConn
	host int
}

func newSockIO(t *testing.T) *sockIO {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "sockio") // blocking: not in the runtime poller
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	s := &sockIO{f: f, rc: rc, host: fds[1]}
	t.Cleanup(func() {
		f.Close()
		unix.Close(fds[1])
	})
	return s
}

func (s *sockIO) ReadPacket(buf []byte) (int, error) {
	var n int
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { n, err = unix.Read(int(fd), buf) }); cerr != nil {
		return 0, cerr
	}
	return n, err
}

func (s *sockIO) WritePacket(pkt [][]byte) error {
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { _, err = unix.Writev(int(fd), pkt) }); cerr != nil {
		return cerr
	}
	return err
}

func (s *sockIO) SyscallConn() (syscall.RawConn, error) { return s.rc, nil }

// hostSend sends a packet towards the device.
func (s *sockIO) hostSend(t *testing.T, p []byte) {
	t.Helper()
	if _, err := unix.Write(s.host, p); err != nil {
		t.Fatalf("host send: %v", err)
	}
}

// hostRecv waits up to 5 s for a packet from the device.
func (s *sockIO) hostRecv(t *testing.T) []byte {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(s.host), Events: unix.POLLIN}}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Poll(fds, 100)
		if err != nil && err != unix.EINTR {
			t.Fatalf("poll: %v", err)
		}
		if n > 0 {
			buf := make([]byte, 70000)
			m, err := unix.Read(s.host, buf)
			if err != nil {
				t.Fatalf("host recv: %v", err)
			}
			return buf[:m]
		}
	}
	t.Fatal("no packet from the device within 5 s")
	return nil
}

// hostNothing checks that no packet is waiting for the host.
func (s *sockIO) hostNothing(t *testing.T) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(s.host), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 0); n > 0 {
		t.Error("unexpected packet from the device")
	}
}

// The worker takes turns with the test through OnIdle: everything the
// test does to guest memory happens while the worker is parked.
func TestNetPairWorker(t *testing.T) {
	t.Cleanup(testutil.CheckFDLeaks(t)) // runs after the other cleanups
	mem, err := vt.NewMemory(0x10000, 1<<20)
	mustNoErr(t, err)
	rxd, err := vt.NewDriver(mem, 16)
	mustNoErr(t, err)
	txd, err := vt.NewDriver(mem, 16)
	mustNoErr(t, err)
	features := fV1 | fEvtIdx
	rxq, err := rxd.Queue(features)
	mustNoErr(t, err)
	txq, err := txd.Queue(features)
	mustNoErr(t, err)
	io := newSockIO(t)
	irq := kvmtest.NewEventFD(t)
	pair, err := virtio.NewNetQueuePair(virtio.NetQueuePairConfig{
		RX: rxq, TX: txq, IO: io, Features: features, Interrupt: virtio.EventFDInterrupt(irq),
	})
	mustNoErr(t, err)
	rxKick, txKick := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)

	// Before the start: a transmit chain, receive buffers, a packet from
	// the host. The first pass must handle all without any kick.
	f1 := frame(bcastMAC, 80, 1)
	_, err = txd.AddChain(vt.Readable(netHdr(0, 0, 0)), vt.Readable(f1))
	mustNoErr(t, err)
	txd.Publish()
	rxHeads := []uint16{}
	for i := 0; i < 4; i++ {
		h, err := rxd.AddChain(vt.Writable(2048))
		mustNoErr(t, err)
		rxHeads = append(rxHeads, h)
	}
	rxd.Publish()
	r1 := frame(devMAC, 70, 2)
	io.hostSend(t, append(netHdr(0, 0, 0), r1...))

	idle := make(chan struct{})
	quit := make(chan struct{})
	var failed error
	var failMu sync.Mutex
	w, err := virtio.StartNetPairWorker(virtio.NetPairWorkerConfig{
		Pair: pair, RXKick: rxKick, TXKick: txKick,
		OnError: func(err error) { failMu.Lock(); failed = err; failMu.Unlock() },
		OnIdle: func() {
			select {
			case idle <- struct{}{}:
			case <-quit:
			}
		},
	})
	mustNoErr(t, err)
	defer func() {
		close(quit)
		w.Stop()
		w.Stop() // idempotent
	}()
	waitIdle := func() {
		t.Helper()
		select {
		case <-idle:
		case <-time.After(5 * time.Second):
			t.Fatal("worker did not go idle within 5 s")
		}
	}
	waitIdle()
	if got := io.hostRecv(t); !bytes.Equal(got, append(netHdr(0, 0, 0), f1...)) {
		t.Errorf("host got % x", got)
	}
	if u := used(rxd); len(u) != 1 || u[0].ID != uint32(rxHeads[0]) || !bytes.Equal(rxd.Written(rxHeads[0], u[0].Len)[12:], r1) {
		t.Errorf("receive used %v", u)
	}
	if n, _ := irq.Drain(); n == 0 {
		t.Error("no interrupt for the received packet (used_event 0)")
	}

	// A kick for a new transmit chain.
	f2 := frame(bcastMAC, 90, 3)
	_, err = txd.AddChain(vt.Readable(append(netHdr(0, 0, 0), f2...)))
	mustNoErr(t, err)
	if !txd.Publish() {
		t.Error("driver would not kick an idle device")
	}
	txKick.Signal()
	waitIdle()
	if got := io.hostRecv(t); !bytes.Equal(got[12:], f2) {
		t.Errorf("host got % x", got)
	}

	// A packet from the host without any kick: the fd wakes the worker.
	rxd.SetUsedEvent(rxd.UsedIdx())
	r2 := frame(devMAC, 200, 4)
	io.hostSend(t, append(netHdr(0, 0, 0), r2...))
	waitIdle()
	if u := used(rxd); len(u) != 1 || !bytes.Equal(rxd.Written(uint16(u[0].ID), u[0].Len)[12:], r2) {
		t.Errorf("receive used %v", u)
	}
	if n, _ := irq.Drain(); n == 0 {
		t.Error("no interrupt though used_event asked for one")
	}

	s := pair.Stats()
	if s.TXPackets != 2 || s.RXPackets != 2 || s.TXKicks != 1 || s.RXKicks != 0 {
		t.Errorf("stats %+v", s)
	}
	io.hostNothing(t)
	failMu.Lock()
	defer failMu.Unlock()
	if failed != nil {
		t.Errorf("worker failed: %v", failed)
	}
}

// A broken ring stops the worker with OnError; Stop still works.
func TestNetPairWorkerStopsOnBrokenQueue(t *testing.T) {
	e := newPairEnv(t, fV1, 8)
	io := newSockIO(t)
	pair, err := virtio.NewNetQueuePair(virtio.NetQueuePairConfig{RX: e.rxq, TX: e.txq, IO: io, Features: fV1, Interrupt: e.irq})
	mustNoErr(t, err)
	e.tx.AddHead(100) // head out of range
	e.tx.Publish()
	errc := make(chan error, 1)
	w, err := virtio.StartNetPairWorker(virtio.NetPairWorkerConfig{
		Pair: pair, RXKick: kvmtest.NewEventFD(t), TXKick: kvmtest.NewEventFD(t),
		OnError: func(err error) { errc <- err },
	})
	mustNoErr(t, err)
	defer w.Stop()
	select {
	case err := <-errc:
		if !errors.Is(err, virtio.ErrHeadIndex) {
			t.Errorf("OnError(%v), want ErrHeadIndex", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnError within 5 s")
	}
	select {
	case <-w.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("worker did not exit after the error")
	}
}

func TestStartNetPairWorkerErrors(t *testing.T) {
	e := newPairEnv(t, fV1, 8)
	// fakeIO cannot be polled.
	if _, err := virtio.StartNetPairWorker(virtio.NetPairWorkerConfig{Pair: e.pair, RXKick: kvmtest.NewEventFD(t), TXKick: kvmtest.NewEventFD(t)}); err == nil {
		t.Error("worker started on an endpoint without an fd")
	}
	if _, err := virtio.StartNetPairWorker(virtio.NetPairWorkerConfig{Pair: e.pair}); err == nil {
		t.Error("worker started without kicks")
	}
	closed := kvmtest.NewEventFD(t)
	closed.Close()
	io := newSockIO(t)
	pair, err := virtio.NewNetQueuePair(virtio.NetQueuePairConfig{RX: e.rxq, TX: e.txq, IO: io, Features: fV1, Interrupt: e.irq})
	mustNoErr(t, err)
	if _, err := virtio.StartNetPairWorker(virtio.NetPairWorkerConfig{Pair: pair, RXKick: closed, TXKick: kvmtest.NewEventFD(t)}); err == nil {
		t.Error("worker started with a closed kick eventfd")
	}
}
