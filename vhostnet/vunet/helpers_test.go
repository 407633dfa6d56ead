package vunet

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/vhostnet"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// seqEndpoint is one queue pair's packet endpoint over a SOCK_SEQPACKET
// socketpair (message boundaries are packet boundaries): the device end is
// non-blocking and pollable, the test plays the host on the other end.
type seqEndpoint struct {
	dev  *os.File
	rc   syscall.RawConn
	host *os.File
}

func newSeqEndpoint(t *testing.T) *seqEndpoint {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	dev := os.NewFile(uintptr(fds[0]), "endpoint")
	rc, err := dev.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	e := &seqEndpoint{dev: dev, rc: rc, host: os.NewFile(uintptr(fds[1]), "host")}
	t.Cleanup(func() {
		e.dev.Close()
		e.host.Close()
	})
	return e
}

func (e *seqEndpoint) ReadPacket(buf []byte) (int, error) {
	var n int
	var err error
	if cerr := e.rc.Control(func(fd uintptr) { n, err = unix.Read(int(fd), buf) }); cerr != nil {
		return 0, cerr
	}
	return n, err
}

func (e *seqEndpoint) WritePacket(pkt [][]byte) error {
	var err error
	if cerr := e.rc.Control(func(fd uintptr) { _, err = unix.Writev(int(fd), pkt) }); cerr != nil {
		return cerr
	}
	return err
}

func (e *seqEndpoint) SyscallConn() (syscall.RawConn, error) { return e.rc, nil }

// hostRead waits for one packet the device sent.
func (e *seqEndpoint) hostRead(t *testing.T) []byte {
	t.Helper()
	e.host.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 70000)
	n, err := e.host.Read(buf)
	if err != nil {
		t.Fatalf("host read: %v", err)
	}
	return buf[:n]
}

func (e *seqEndpoint) hostWrite(t *testing.T, pkt []byte) {
	t.Helper()
	if _, err := e.host.Write(pkt); err != nil {
		t.Fatalf("host write: %v", err)
	}
}

// fakeNet is a virtio.NetBackend of seqEndpoints.
type fakeNet struct {
	mu       sync.Mutex
	eps      []*seqEndpoint
	enabled  []bool
	offloads virtio.NetOffloads
}

func newFakeNet(t *testing.T, pairs int) *fakeNet {
	f := &fakeNet{enabled: make([]bool, pairs)}
	for range pairs {
		f.eps = append(f.eps, newSeqEndpoint(t))
	}
	for i := range f.enabled {
		f.enabled[i] = true
	}
	return f
}

func (f *fakeNet) Pair(i int) virtio.PollablePacketIO { return f.eps[i] }
func (f *fakeNet) SetOffloads(o virtio.NetOffloads) error {
	f.mu.Lock()
	f.offloads = o
	f.mu.Unlock()
	return nil
}
func (f *fakeNet) EnablePair(i int, on bool) error {
	f.mu.Lock()
	f.enabled[i] = on
	f.mu.Unlock()
	return nil
}
func (f *fakeNet) isEnabled(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enabled[i]
}

// guestRAM is memfd-backed test guest memory, shareable with a backend.
type guestRAM struct{ *vt.SharedMemory }

func newGuestRAM(t *testing.T, base uint64, size int) *guestRAM {
	t.Helper()
	m, err := vt.NewSharedMemory("test-guest", base, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &guestRAM{m}
}

func (g *guestRAM) shared() []vhostnet.MemoryRegion {
	return []vhostnet.MemoryRegion{vhostnet.SharedRegion(g.Base, g.Buf, g.File, 0)}
}

// vm is a VMM side: one vhost-user virtio-net device over the fake
// kernel, reached through the transport's registers like a guest would.
type vm struct {
	t       *testing.T
	ram     *guestRAM
	kern    *kvmtest.Kernel
	space   *kvm.IoEventSpace
	att     *vhostnet.Attacher
	call    *kvm.EventFD
	dev     *vhostnet.NetDevice
	tr      *virtio.MMIOTransport
	drivers []*vt.Driver
	closed  bool
}

const mmioBase = 0xd000_0000

func newVM(t *testing.T, sock string, pairs int) *vm {
	t.Helper()
	return newVMWith(t, &vhostnet.UserClient{Path: sock, Opts: vhostuser.Options{Timeout: 2 * time.Second}}, pairs)
}

// newVMWith builds the VMM side over any connector.
func newVMWith(t *testing.T, conn vhostnet.Connector, pairs int) *vm {
	t.Helper()
	v := &vm{t: t, ram: newGuestRAM(t, 0x10_0000, 16<<20), kern: kvmtest.New()}
	v.space = kvm.NewIoEventSpace(v.kern)
	var err error
	if v.att, err = vhostnet.NewAttacher(vhostnet.AttacherConfig{IoEvents: v.space}); err != nil {
		t.Fatal(err)
	}
	if v.call, err = kvm.NewEventFD(); err != nil {
		t.Fatal(err)
	}
	v.dev, err = vhostnet.NewNetDevice(vhostnet.NetConfig{
		Connector: conn,
		Attacher:  v.att, QueuePairs: pairs, QueueSize: 64, Memory: v.ram.shared(), Call: v.call,
		MAC: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56},
	})
	if err != nil {
		t.Fatal(err)
	}
	v.tr, err = virtio.NewMMIOTransport(v.dev, virtio.MMIOConfig{Base: mmioBase, Mem: v.ram.Guest, IoEvents: v.space, ExternalNotifiers: true, UsedBufferAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.close)
	return v
}

func (v *vm) close() {
	if v.closed {
		return
	}
	v.closed = true
	v.tr.Close()
	v.dev.Close()
	v.att.Close()
	v.call.Close()
}

// start initialises the device with every queue (pairs and control).
func (v *vm) start(features uint64) {
	v.t.Helper()
	if v.drivers == nil {
		for range 2*v.dev.QueuePairs() + 1 {
			d, err := vt.NewDriver(v.ram.Memory, 64)
			if err != nil {
				v.t.Fatal(err)
			}
			v.drivers = append(v.drivers, d)
		}
	}
	if err := vt.InitMMIO(v.tr, features, v.drivers...); err != nil {
		v.t.Fatal(err)
	}
}

func (v *vm) kick(q int) { vt.WriteReg(v.tr, vt.RegQueueNotify, uint32(q)) }

// waitUsed waits for the next used element of driver q.
func (v *vm) waitUsed(q int) vt.Used {
	v.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if u, ok := v.drivers[q].GetUsed(); ok {
			return u
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("queue %d: no used buffer", q)
		}
		time.Sleep(time.Millisecond)
	}
}

// ctrl sends a control command and returns the ack.
func (v *vm) ctrl(cmd []byte) byte {
	v.t.Helper()
	q := 2 * v.dev.QueuePairs()
	d := v.drivers[q]
	head, err := d.AddChain(vt.Readable(cmd), vt.Writable(1))
	if err != nil {
		v.t.Fatal(err)
	}
	d.Publish()
	v.kick(q)
	v.waitUsed(q)
	return d.Written(head, 1)[0]
}

// frame builds a virtio-net packet: a zero header and an Ethernet frame
// carrying tag.
func frame(tag string) []byte {
	p := make([]byte, virtio.NetHdrSize+14+len(tag))
	f := p[virtio.NetHdrSize:]
	copy(f[0:6], []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56})
	copy(f[6:12], []byte{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc})
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	copy(f[14:], tag)
	return p
}

// serve runs a Server on a fresh socket and returns its path and a stop
// function that ends it (as if the process died: the listener goes away
// and so does the session).
func serve(t *testing.T, dir string, fn *fakeNet, pairs int) (*Server, string, func()) {
	t.Helper()
	sock := filepath.Join(dir, "vu.sock")
	return serveAt(t, sock, fn, pairs)
}

func serveAt(t *testing.T, sock string, fn *fakeNet, pairs int) (*Server, string, func()) {
	t.Helper()
	s, err := New(Config{Backend: fn, QueuePairs: pairs})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("serve: %v", err)
			}
			ln.Close()
		})
	}
	t.Cleanup(stop)
	return s, sock, stop
}
