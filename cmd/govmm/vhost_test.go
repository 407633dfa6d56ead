package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// backendProc is a `govmm vhost-user-net` process.
type backendProc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

// startBackend runs `govmm vhost-user-net` in ns and waits until its
// socket accepts connections. It is killed when the test ends.
func startBackend(t *testing.T, ns *testutil.NetNS, sock, tapName string, queues int) *backendProc {
	t.Helper()
	b := &backendProc{done: make(chan error, 1)}
	b.cmd = govmmCommand(t, ns, "vhost-user-net", "--socket", sock, "--tap", tapName, "--queues", strconv.Itoa(queues), "--log-level", "warn")
	b.cmd.Stdout, b.cmd.Stderr = &b.out, &b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() {
		b.kill()
		if t.Failed() {
			t.Logf("backend output:\n%s", b.out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			// That probe was a session of its own; it is over.
			return b
		}
		select {
		case err := <-b.done:
			b.done <- err
			t.Fatalf("backend exited: %v\n%s", err, b.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend socket %s never accepted a connection", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the process abruptly (SIGKILL) and waits for it.
func (b *backendProc) kill() {
	if b.cmd.ProcessState != nil {
		return
	}
	// ip netns exec replaces itself with govmm: the pid is govmm's.
	b.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
	}
}

// netdrvPairs matches netdrv's device line ("pairs 8/32").
var netdrvPairs = regexp.MustCompile(`netdrv dev0: .* pairs (\d+)/(\d+) `)

// TestVhostUserNetdrv32Pairs is the first check: netdrv pings the
// host over a 32-pair vhost-user device served by govmm vhost-user-net in
// a namespace; every pair gets every reply and the statistics line shows
// all 64 data-queue notifiers registered in one commit.
func TestVhostUserNetdrv32Pairs(t *testing.T) {
	testutil.RequireKVM(t)
	kernel := testutil.TinyKernel(t, "netdrv")
	ns := testutil.NewNetNS(t)
	ns.AddTAP(t, "tap0", "10.0.0.1/24")
	sock := filepath.Join(t.TempDir(), "vu0.sock")
	startBackend(t, ns, sock, "tap0", 32)
	code, out, errOut := run("run", "--kernel", kernel,
		"--cmdline", "netdrv.ip=10.0.0.2/24 netdrv.peer=10.0.0.1 netdrv.pings=5",
		"--net", "vhost-user="+sock+",queues=32", "--stats")
	m := netdrvPairs.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("govmm run = %d; no netdrv device line\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	used, offered := atoi(t, m[1]), atoi(t, m[2])
	if offered != 32 {
		t.Errorf("device offered %d pairs, want 32", offered)
	}
	want := fmt.Sprintf("netdrv: pairs=%d sent=%d replies=%d", used, 5*used, 5*used)
	stats := fmt.Sprintf("net0: notifiers=%d attach_commits=1 ", 2*used)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(errOut, stats) || !strings.Contains(errOut, " detach_commits=1 ") {
		t.Fatalf("govmm run = %d, want 0, %q and %q\nstdout:\n%s\nstderr:\n%s", code, want, stats, out, errOut)
	}
	if used < 32 {
		t.Skipf("netdrv drove only %d of the 32 pairs (its MAX_PAIRS); the %d it used all worked", used, used)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestQEMUFrontendInterop: QEMU's vhost-user front-end (microvm,
// virtio-mmio, guest memory from a shared memfd) against govmm
// vhost-user-net, with netdrv pinging the host on every pair.
func TestQEMUFrontendInterop(t *testing.T) {
	testutil.RequireKVM(t)
	qemu := testutil.RequireCommand(t, "qemu-system-x86_64")
	kernel := testutil.TinyKernel(t, "netdrv")
	ns := testutil.NewNetNS(t)
	ns.AddTAP(t, "tap0", "10.0.0.1/24")
	sock := filepath.Join(t.TempDir(), "vu.sock")
	const pairs = 8
	startBackend(t, ns, sock, "tap0", pairs)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-M", "microvm,acpi=off,memory-backend=mem", "-accel", "kvm", "-m", "256M",
		"-object", "memory-backend-memfd,id=mem,size=256M,share=on",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0x501,iosize=1",
		"-global", "virtio-mmio.force-legacy=false",
		"-chardev", "socket,id=c,path="+sock,
		"-netdev", fmt.Sprintf("vhost-user,id=n,chardev=c,queues=%d", pairs),
		"-device", "virtio-net-device,netdev=n,mq=on",
		"-kernel", kernel,
		"-append", fmt.Sprintf("netdrv.ip=10.0.0.2/24 netdrv.peer=10.0.0.1 netdrv.pings=5 netdrv.pairs=%d", pairs))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	console := strings.ReplaceAll(out.String(), "\r\n", "\n")
	want := fmt.Sprintf("netdrv: pairs=%d sent=%d replies=%d", pairs, 5*pairs, 5*pairs)
	// isa-debug-exit turns netdrv's 0 into QEMU's exit status 1.
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(console, want) {
		t.Fatalf("qemu: %v, want exit 1 and %q\nconsole:\n%s\nstderr:\n%s", err, want, console, errOut.String())
	}
}

// guestVM is the VMM side of a vhost-user virtio-net device on a real KVM
// VM, driven through its registers by the test (the driver), with ICMP
// traffic to the namespace's host stack.
type guestVM struct {
	t       *testing.T
	sys     *kvm.System
	vm      *kvm.VM
	ram     *vt.SharedMemory
	space   *kvm.IoEventSpace
	att     *vhostnet.Attacher
	call    *kvm.EventFD
	dev     *vhostnet.NetDevice
	tr      *virtio.MMIOTransport
	mem     *vt.Memory
	drivers []*vt.Driver
	pairs   int
	feat    uint64
	rxHeads map[int]map[uint16]bool
	seq     uint16
	closed  bool
}

const (
	guestMMIO = 0xd000_0000
	guestMAC  = "52:54:00:12:34:56"
	hostMAC   = "02:00:00:00:00:01"
)

func newGuestVM(t *testing.T, sock string, pairs int) *guestVM {
	t.Helper()
	g := &guestVM{t: t, pairs: pairs, rxHeads: map[int]map[uint16]bool{}}
	t.Cleanup(g.close)
	var err error
	if g.sys, err = kvm.Open(kvm.DevicePath); err != nil {
		t.Fatal(err)
	}
	if g.vm, err = g.sys.CreateVM(); err != nil {
		t.Fatal(err)
	}
	if g.ram, err = vt.NewSharedMemory("test-guest-ram", 0, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := g.vm.SetUserMemoryRegion(0, 0, g.ram.Buf, 0); err != nil {
		t.Fatal(err)
	}
	g.mem = g.ram.Memory
	g.space = kvm.NewIoEventSpace(g.vm)
	if g.att, err = vhostnet.NewAttacher(vhostnet.AttacherConfig{IoEvents: g.space}); err != nil {
		t.Fatal(err)
	}
	if g.call, err = kvm.NewEventFD(); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(guestMAC)
	g.dev, err = vhostnet.NewNetDevice(vhostnet.NetConfig{
		Connector: &vhostnet.UserClient{Path: sock, Opts: vhostuser.Options{Timeout: 2 * time.Second}},
		Attacher:  g.att, MAC: mac, QueuePairs: pairs, QueueSize: 64,
		Memory: []vhostnet.MemoryRegion{vhostnet.SharedRegion(0, g.ram.Buf, g.ram.File, 0)}, Call: g.call,
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.tr, err = virtio.NewMMIOTransport(g.dev, virtio.MMIOConfig{Base: guestMMIO, Mem: g.mem.Guest, IoEvents: g.space, ExternalNotifiers: true, UsedBufferAlways: true}); err != nil {
		t.Fatal(err)
	}
	for range 2*pairs + 1 {
		d, err := vt.NewDriver(g.mem, 64)
		if err != nil {
			t.Fatal(err)
		}
		g.drivers = append(g.drivers, d)
	}
	g.feat = g.dev.Features() & (virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.NetFMrgRxbuf |
		virtio.NetFMAC | virtio.NetFCtrlVQ | virtio.NetFMQ | virtio.NetFStatus)
	return g
}

func (g *guestVM) close() {
	if g.closed {
		return
	}
	g.closed = true
	if g.tr != nil {
		g.tr.Close()
	}
	if g.dev != nil {
		g.dev.Close()
	}
	if g.att != nil {
		g.att.Close()
	}
	if g.call != nil {
		g.call.Close()
	}
	if g.vm != nil {
		g.vm.Close()
	}
	if g.sys != nil {
		g.sys.Close()
	}
	if g.ram != nil {
		g.ram.Close()
	}
}

// start initialises the device (a fresh set of rings each time, as a
// driver that reset it would), posts receive buffers and enables every
// pair.
func (g *guestVM) start() {
	g.t.Helper()
	g.rxHeads = map[int]map[uint16]bool{}
	// The device was reset (or never started): nothing uses the old
	// rings and buffers any more.
	g.mem.Release(0)
	for q := range g.drivers {
		d, err := vt.NewDriver(g.mem, 64)
		if err != nil {
			g.t.Fatal(err)
		}
		g.drivers[q] = d
	}
	if err := vt.InitMMIO(g.tr, g.feat, g.drivers...); err != nil {
		g.t.Fatal(err)
	}
	for p := range g.pairs {
		g.postRX(p, 16)
	}
	if g.pairs > 1 {
		if ack := g.ctrl([]byte{4, 0, byte(g.pairs), 0}); ack != 0 {
			g.t.Fatalf("VQ_PAIRS_SET ack %d", ack)
		}
	}
}

func (g *guestVM) reset() { vt.WriteReg(g.tr, vt.RegStatus, 0) }

func (g *guestVM) kick(q int) { vt.WriteReg(g.tr, vt.RegQueueNotify, uint32(q)) }

func (g *guestVM) postRX(p, n int) {
	d := g.drivers[2*p]
	if g.rxHeads[p] == nil {
		g.rxHeads[p] = map[uint16]bool{}
	}
	for range n {
		h, err := d.AddChain(vt.Writable(2048))
		if err != nil {
			g.t.Fatal(err)
		}
		g.rxHeads[p][h] = true
	}
	d.Publish()
	g.kick(2 * p)
}

func (g *guestVM) ctrl(cmd []byte) byte {
	q := 2 * g.pairs
	d := g.drivers[q]
	head, err := d.AddChain(vt.Readable(cmd), vt.Writable(1))
	if err != nil {
		g.t.Fatal(err)
	}
	d.Publish()
	g.kick(q)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := d.GetUsed(); ok {
			return d.Written(head, 1)[0]
		}
		if time.Now().After(deadline) {
			g.t.Fatal("control command not served")
		}
		time.Sleep(time.Millisecond)
	}
}

// ping sends one ICMP echo request on pair p and waits up to wait for
// the reply on any pair; it reports whether it came.
func (g *guestVM) ping(p int, wait time.Duration) bool {
	g.t.Helper()
	g.seq++
	seq := g.seq
	tx := g.drivers[2*p+1]
	for {
		if _, ok := tx.GetUsed(); !ok {
			break
		}
	}
	if _, err := tx.AddChain(vt.Readable(icmpEcho(seq))); err != nil {
		g.t.Fatal(err)
	}
	tx.Publish()
	g.kick(2*p + 1)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		for q := range g.pairs {
			d := g.drivers[2*q]
			u, ok := d.GetUsed()
			if !ok {
				continue
			}
			pkt := d.Written(uint16(u.ID), u.Len)
			g.postRX(q, 1)
			if isEchoReply(pkt, seq) {
				return true
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
	return false
}

// icmpEcho is a virtio-net packet (zero header) carrying an ICMP echo
// request from 10.0.0.2 to 10.0.0.1.
func icmpEcho(seq uint16) []byte {
	gmac, _ := net.ParseMAC(guestMAC)
	hmac, _ := net.ParseMAC(hostMAC)
	payload := []byte("govmm vhost test payload")
	ip := make([]byte, 20+8+len(payload))
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], seq)
	copy(ip[12:], []byte{10, 0, 0, 2})
	copy(ip[16:], []byte{10, 0, 0, 1})
	binary.BigEndian.PutUint16(ip[10:], checksum(ip[:20]))
	icmp := ip[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], 0x4701)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	pkt := make([]byte, virtio.NetHdrSize, virtio.NetHdrSize+14+len(ip))
	pkt = append(pkt, hmac...)
	pkt = append(pkt, gmac...)
	pkt = append(pkt, 0x08, 0x00)
	return append(pkt, ip...)
}

func isEchoReply(pkt []byte, seq uint16) bool {
	f := pkt[min(len(pkt), virtio.NetHdrSize):]
	if len(f) < 14+28 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14+9] != 1 {
		return false
	}
	icmp := f[14+int(f[14]&0xf)*4:]
	return icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == 0x4701 && binary.BigEndian.Uint16(icmp[6:]) == seq
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// hostNS is a namespace with tap0 at 10.0.0.1 that knows the guest's
// address (a static neighbour entry: the test driver does not answer ARP).
func hostNS(t *testing.T) *testutil.NetNS {
	ns := testutil.NewNetNS(t)
	ns.IP(t, "tuntap", "add", "dev", "tap0", "mode", "tap", "multi_queue", "vnet_hdr")
	ns.IP(t, "link", "set", "tap0", "address", hostMAC)
	ns.IP(t, "addr", "add", "10.0.0.1/24", "dev", "tap0")
	ns.IP(t, "link", "set", "tap0", "up")
	ns.IP(t, "neigh", "replace", "10.0.0.2", "lladdr", guestMAC, "dev", "tap0", "nud", "permanent")
	return ns
}

// eventfds counts this process's open eventfds.
func eventfds(t *testing.T) int {
	fds, err := testutil.OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, target := range fds {
		if target == "anon_inode:[eventfd]" {
			n++
		}
	}
	return n
}

// TestVhostUserBackendKilled: the backend process is killed (SIGKILL) in
// the middle of traffic; the device stops its queues and deregisters
// their notifiers (checked in KVM), a new backend process on the same
// socket is reconnected to, and traffic resumes without the driver
// resetting the device. Before that, a peer sending garbage to the
// backend's socket is dropped and the next front-end served. Nothing
// leaks: every descriptor the test process opened is closed at the end,
// and the eventfds in use after the restart are as many as before.
func TestVhostUserBackendKilled(t *testing.T) {
	testutil.RequireKVM(t)
	t.Cleanup(testutil.CheckFDLeaks(t))
	ns := hostNS(t)
	sock := filepath.Join(t.TempDir(), "vu.sock")
	b1 := startBackend(t, ns, sock, "tap0", 2)

	// Garbage first: the backend drops that peer.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("\x05\x00\x00\x00\x01\x00\x00\x00\x09\x00\x00\x00not a memory table"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 16)); err == nil {
		t.Error("the backend answered garbage")
	}
	c.Close()

	g := newGuestVM(t, sock, 2)
	g.start()
	if n := g.space.Len(); n != 4 {
		t.Fatalf("%d notifiers registered, want 4", n)
	}
	for i := range 10 {
		if !g.ping(i%2, 2*time.Second) {
			t.Fatalf("ping %d before the crash: no reply", i)
		}
	}
	attachedFDs := eventfds(t)

	// Traffic in flight while the backend dies.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(5 * time.Millisecond)
		b1.kill()
	}()
	lost := 0
	for i := range 20 {
		if !g.ping(i%2, 50*time.Millisecond) {
			lost++
		}
	}
	wg.Wait()
	testutil.WaitFor(t, 15*time.Second, "the device to stop", func() bool { return !g.dev.Connected() && !g.dev.Attached() })
	if n := g.space.Len(); n != 0 {
		t.Errorf("%d notifiers registered while the backend is dead", n)
	}
	if lost == 0 {
		t.Log("no ping was lost: the kill came after the burst")
	}
	if n := eventfds(t); n >= attachedFDs {
		t.Errorf("%d eventfds open with the backend dead, %d while attached: the dead session's were not closed", n, attachedFDs)
	}

	startBackend(t, ns, sock, "tap0", 2)
	testutil.WaitFor(t, 15*time.Second, "the device to restart", func() bool { return g.dev.Attached() })
	if s := vt.ReadReg(g.tr, vt.RegStatus); s&virtio.StatusNeedsReset != 0 || s&virtio.StatusDriverOK == 0 {
		t.Fatalf("status %#x after the restart", s)
	}
	if n := g.space.Len(); n != 4 {
		t.Errorf("%d notifiers registered after the restart, want 4", n)
	}
	ok := 0
	for i := range 20 {
		if g.ping(i%2, 2*time.Second) {
			ok++
		}
	}
	if ok != 20 {
		t.Errorf("%d of 20 pings answered after the restart", ok)
	}
	if n := eventfds(t); n != attachedFDs {
		t.Errorf("%d eventfds open after the restart, %d before the crash", n, attachedFDs)
	}
	if st := g.dev.Stats(); st.Disconnects != 1 || st.Reconnects != 1 {
		t.Errorf("device stats %+v", st)
	}
	g.close()
}

// TestVhostUserResetLoop: the driver resets the device and starts it
// again 100 times against govmm vhost-user-net. After every start each
// queue's doorbell is registered in KVM (registering it again collides),
// after every reset none is (registering succeeds), and no descriptor
// leaks.
func TestVhostUserResetLoop(t *testing.T) {
	testutil.RequireKVM(t)
	t.Cleanup(testutil.CheckFDLeaks(t))
	ns := hostNS(t)
	sock := filepath.Join(t.TempDir(), "vu.sock")
	startBackend(t, ns, sock, "tap0", 2)
	g := newGuestVM(t, sock, 2)
	probe, err := kvm.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	registered := func(q uint64) bool {
		e := kvm.Ioeventfd{Space: kvm.SpaceMMIO, Addr: guestMMIO + virtio.MMIOQueueNotify, Len: 4, HasDatamatch: true, Datamatch: q, Event: probe}
		err := g.vm.AssignIoeventfd(e)
		if err == nil {
			if err := g.vm.DeassignIoeventfd(e); err != nil {
				t.Fatal(err)
			}
			return false
		}
		if !errors.Is(err, unix.EEXIST) {
			t.Fatalf("probe queue %d: %v", q, err)
		}
		return true
	}
	var fdsAttached int
	for cycle := range 100 {
		g.start()
		for q := range uint64(4) {
			if !registered(q) {
				t.Fatalf("cycle %d: queue %d has no notifier in KVM", cycle, q)
			}
		}
		if registered(4) {
			t.Fatalf("cycle %d: the control queue has a notifier", cycle)
		}
		if cycle%25 == 0 && !g.ping(cycle%2, 2*time.Second) {
			t.Fatalf("cycle %d: no ping reply", cycle)
		}
		n := eventfds(t)
		if cycle == 0 {
			fdsAttached = n
		} else if n != fdsAttached {
			t.Fatalf("cycle %d: %d eventfds open, %d in the first cycle", cycle, n, fdsAttached)
		}
		g.reset()
		for q := range uint64(4) {
			if registered(q) {
				t.Fatalf("cycle %d: queue %d still registered in KVM after the reset", cycle, q)
			}
		}
	}
	if st := g.dev.Stats(); st.Attaches != 100 || st.Detaches != 100 || st.AttachCommits != 100 || st.DetachCommits != 100 {
		t.Errorf("device stats %+v", st)
	}
	g.close()
}

// TestVhostUserNetBadInput: the backend command refuses bad flags with a
// usage error.
func TestVhostUserNetBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"vhost-user-net", "--tap", "t"}, "--socket is required"},
		{[]string{"vhost-user-net", "--socket", "s"}, "--tap is required"},
		{[]string{"vhost-user-net", "--socket", "s", "--tap", "t", "--queues", "0"}, "--queues 0"},
		{[]string{"vhost-user-net", "--socket", "s", "--tap", "t", "--queues", "33"}, "--queues 33"},
		{[]string{"vhost-user-net", "--socket", "s", "--tap", "a/b"}, "not a valid interface name"},
	} {
		code, _, errOut := run(c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("govmm %s = %d, stderr %q, want %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}
}

// TestBenchAttach runs `govmm bench attach` small, as JSON and as a
// table, and rejects bad sizes.
func TestBenchAttach(t *testing.T) {
	testutil.RequireKVM(t)
	var out, errOut bytes.Buffer
	if err := benchAttach([]string{"--devices", "2", "--pairs", "2", "--rounds", "1", "--json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Notifiers int `json:"notifiers"`
		Modes     []struct {
			Mode   string `json:"mode"`
			Attach struct {
				NotifierMS float64 `json:"notifier_ms"`
				BackendMS  float64 `json:"backend_ms"`
				Commits    int     `json:"commits"`
			} `json:"attach"`
		} `json:"modes"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if res.Notifiers != 8 || len(res.Modes) != 2 || res.Modes[0].Attach.Commits != 1 || res.Modes[1].Attach.Commits != 8 {
		t.Errorf("result %s", out.String())
	}
	out.Reset()
	if err := benchAttach([]string{"--devices", "1", "--pairs", "1", "--rounds", "1"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "notifier phase") {
		t.Errorf("table:\n%s", out.String())
	}
	for _, bad := range [][]string{{"--devices", "0"}, {"--pairs", "33"}, {"--queue-size", "3000"}} {
		if err := benchAttach(bad, &out, &errOut); err == nil {
			t.Errorf("bench attach %v accepted", bad)
		}
	}
}
