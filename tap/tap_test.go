package tap_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/tap"
)

func TestOpenBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name   string
		queues int
	}{
		{"", 1},
		{"0123456789abcdef", 1}, // 16 bytes: over IFNAMSIZ-1
		{"a/b", 1},
		{"a b", 1},
		{"a:b", 1},
		{"..", 1},
		{"tap0", 0},
		{"tap0", tap.MaxQueues + 1},
	} {
		d, err := tap.Open(tc.name, tc.queues, tap.Options{})
		if err == nil {
			d.Close()
			t.Errorf("Open(%q, %d) succeeded", tc.name, tc.queues)
			continue
		}
		if !errors.Is(err, tap.ErrBadArgument) {
			t.Errorf("Open(%q, %d) = %v, want ErrBadArgument", tc.name, tc.queues, err)
		}
	}
	if err := tap.ValidateName("0123456789abcde"); err != nil {
		t.Errorf("ValidateName of a 15-byte name: %v", err)
	}
}

// open opens name in ns, failing the test on error.
func open(t *testing.T, ns *testutil.NetNS, name string, queues int) *tap.Device {
	t.Helper()
	var d *tap.Device
	err := ns.Do(func() (err error) {
		d, err = tap.Open(name, queues, tap.Options{})
		return err
	})
	if err != nil {
		t.Fatalf("Open(%s, %d): %v", name, queues, err)
	}
	return d
}

func TestOpenCreatesAndRemoves(t *testing.T) {
	ns := testutil.NewNetNS(t)
	check := testutil.CheckFDLeaks(t)
	d := open(t, ns, "gtap0", 4)
	if !d.Created() || !d.MultiQueue() || d.NumQueues() != 4 || d.Name() != "gtap0" || d.Index() == 0 {
		t.Errorf("created=%v multiqueue=%v queues=%d name=%q index=%d", d.Created(), d.MultiQueue(), d.NumQueues(), d.Name(), d.Index())
	}
	out := ns.IP(t, "-d", "link", "show", "gtap0")
	for _, want := range []string{"tap", "multi_queue", "vnet_hdr", "UP"} {
		if !strings.Contains(out, want) {
			t.Errorf("ip link show lacks %q:\n%s", want, out)
		}
	}
	if d.MTU() != 1500 {
		t.Errorf("MTU %d, want 1500", d.MTU())
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if out, err := ns.TryIP("link", "show", "gtap0"); err == nil {
		t.Errorf("gtap0 still exists after Close:\n%s", out)
	}
	check()
}

// A persistent TAP that Open created (someone set TUNSETPERSIST, or a
// vhost backend still holds a queue) is removed by Close too.
func TestCloseRemovesCreatedEvenIfPersistent(t *testing.T) {
	ns := testutil.NewNetNS(t)
	d := open(t, ns, "gtap1", 1)
	rc, _ := d.Queue(0).SyscallConn()
	if err := rc.Control(func(fd uintptr) {
		if err := unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 1); err != nil {
			t.Errorf("TUNSETPERSIST: %v", err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if out, err := ns.TryIP("link", "show", "gtap1"); err == nil {
		t.Errorf("gtap1 still exists after Close:\n%s", out)
	}
}

func TestOpenAttachesExisting(t *testing.T) {
	ns := testutil.NewNetNS(t)
	ns.IP(t, "tuntap", "add", "tap0", "mode", "tap", "multi_queue", "vnet_hdr")
	ns.IP(t, "addr", "add", "10.0.0.1/24", "dev", "tap0")
	ns.IP(t, "link", "set", "tap0", "mtu", "1400")
	check := testutil.CheckFDLeaks(t)
	d := open(t, ns, "tap0", 2)
	if d.Created() || !d.MultiQueue() || d.MTU() != 1400 {
		t.Errorf("created=%v multiqueue=%v mtu=%d, want false true 1400", d.Created(), d.MultiQueue(), d.MTU())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	out := ns.IP(t, "addr", "show", "tap0")
	if !strings.Contains(out, "10.0.0.1/24") {
		t.Errorf("tap0 lost its address or disappeared:\n%s", out)
	}
	check()
}

func TestOpenSingleQueueExisting(t *testing.T) {
	ns := testutil.NewNetNS(t)
	ns.IP(t, "tuntap", "add", "sq0", "mode", "tap")
	d := open(t, ns, "sq0", 1)
	if d.MultiQueue() {
		t.Error("single-queue TAP reported multi-queue")
	}
	if err := d.Queue(0).SetAttached(false); err == nil || !errors.Is(err, unix.EINVAL) {
		t.Errorf("detaching the queue of a single-queue TAP: %v, want EINVAL", err)
	}
	// A second user of a single-queue TAP: TUNSETIFF says EBUSY.
	err := ns.Do(func() error {
		d2, err := tap.Open("sq0", 1, tap.Options{})
		if err == nil {
			d2.Close()
		}
		return err
	})
	if err == nil || !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "TUNSETIFF sq0") {
		t.Errorf("second Open of a busy single-queue TAP: %v, want TUNSETIFF sq0 ... EBUSY", err)
	}
	d.Close()

	err = ns.Do(func() error {
		d, err := tap.Open("sq0", 2, tap.Options{})
		if err == nil {
			d.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "single-queue") {
		t.Errorf("Open(sq0, 2) = %v, want a single-queue error", err)
	}
}

func TestOpenRefusesNonTAP(t *testing.T) {
	ns := testutil.NewNetNS(t)
	ns.IP(t, "tuntap", "add", "tun0", "mode", "tun")
	ns.IP(t, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	for _, name := range []string{"tun0", "veth0", "lo"} {
		err := ns.Do(func() error {
			d, err := tap.Open(name, 1, tap.Options{})
			if err == nil {
				d.Close()
			}
			return err
		})
		if !errors.Is(err, tap.ErrBadArgument) || !strings.Contains(err.Error(), "not a TAP") {
			t.Errorf("Open(%s) = %v, want a not-a-TAP error", name, err)
		}
	}
	if _, err := ns.TryIP("link", "show", "tun0"); err != nil {
		t.Error("tun0 disappeared")
	}
}

func TestOffloadsAndVnetHdr(t *testing.T) {
	ns := testutil.NewNetNS(t)
	d := open(t, ns, "gtap2", 2)
	defer d.Close()
	want := tap.OffloadCsum | tap.OffloadTSO4 | tap.OffloadTSO6
	if got := d.SupportedOffloads(); got != want {
		t.Errorf("SupportedOffloads = %#x, want %#x", got, want)
	}
	if err := d.SetOffload(want); err != nil {
		t.Errorf("SetOffload(%#x): %v", want, err)
	}
	// TSO without checksum offload is refused by the kernel.
	err := d.SetOffload(tap.OffloadTSO4)
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "TUNSETOFFLOAD") || !strings.Contains(err.Error(), "gtap2") {
		t.Errorf("SetOffload(TSO4 alone) = %v, want TUNSETOFFLOAD gtap2 ... EINVAL", err)
	}
	if err := d.SetVnetHdrSize(4); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "TUNSETVNETHDRSZ") {
		t.Errorf("SetVnetHdrSize(4) = %v, want EINVAL", err)
	}
	// Device-wide ioctls still work with queue 0 detached.
	if err := d.Queue(0).SetAttached(false); err != nil {
		t.Fatalf("detach queue 0: %v", err)
	}
	if err := d.SetOffload(0); err != nil {
		t.Errorf("SetOffload with queue 0 detached: %v", err)
	}
	if err := d.Queue(0).SetAttached(true); err != nil {
		t.Errorf("attach queue 0: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.SetOffload(0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SetOffload after Close = %v, want os.ErrClosed", err)
	}
}

var guestMAC = net.HardwareAddr{0x02, 0x47, 0x56, 0x00, 0x00, 0x02}

// arpRequest builds a vnet header (all zero) and an ARP request from
// guestMAC/10.0.0.2 for 10.0.0.1.
func arpRequest() [][]byte {
	hdr := make([]byte, tap.VnetHdrSize)
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], guestMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], 0x0800)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:14], guestMAC)
	copy(a[14:18], net.IPv4(10, 0, 0, 2).To4())
	copy(a[24:28], net.IPv4(10, 0, 0, 1).To4())
	// Split the frame to check the gather write.
	return [][]byte{hdr, f[:20], f[20:]}
}

// readARPReply waits for an ARP reply to guestMAC on any queue.
func readARPReply(t *testing.T, d *tap.Device) []byte {
	t.Helper()
	var fds []unix.PollFd
	for i := 0; i < d.NumQueues(); i++ {
		rc, _ := d.Queue(i).SyscallConn()
		rc.Control(func(fd uintptr) { fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}) })
	}
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 65600)
	for time.Now().Before(deadline) {
		if _, err := unix.Poll(fds, 200); err != nil && err != unix.EINTR {
			t.Fatalf("poll: %v", err)
		}
		for i := range fds {
			for {
				n, err := d.Queue(i).ReadPacket(buf)
				if errors.Is(err, syscall.EAGAIN) {
					break
				}
				if err != nil {
					t.Fatalf("ReadPacket: %v", err)
				}
				p := buf[:n]
				if n >= tap.VnetHdrSize+42 && bytes.Equal(p[12:18], guestMAC) && binary.BigEndian.Uint16(p[24:]) == 0x0806 &&
					binary.BigEndian.Uint16(p[12+14+6:]) == 2 {
					return append([]byte(nil), p...)
				}
			}
		}
	}
	t.Fatal("no ARP reply from the host within 5 s")
	return nil
}

// The host's IP stack answers an ARP request written to the TAP, and the
// reply comes back with a 12-byte vnet header in front.
func TestPacketRoundTrip(t *testing.T) {
	ns := testutil.NewNetNS(t)
	d := open(t, ns, "gtap3", 2)
	defer d.Close()
	ns.IP(t, "addr", "add", "10.0.0.1/24", "dev", "gtap3")
	if err := d.Queue(1).WritePacket(arpRequest()); err != nil {
		t.Fatalf("WritePacket: %v", err)
	}
	p := readARPReply(t, d)
	if hdr := p[:tap.VnetHdrSize]; !bytes.Equal(hdr[:10], make([]byte, 10)) {
		t.Errorf("vnet header % x, want zero flags/gso", hdr)
	}
	if sip := net.IP(p[12+14+14 : 12+14+18]); !sip.Equal(net.IPv4(10, 0, 0, 1)) {
		t.Errorf("ARP reply sender IP %v", sip)
	}

	// Detach every queue but 0: the reply must arrive on queue 0.
	if err := d.Queue(1).SetAttached(false); err != nil {
		t.Fatal(err)
	}
	if d.Queue(1).Attached() {
		t.Error("queue 1 still attached")
	}
	ns.IP(t, "neigh", "flush", "dev", "gtap3")
	if err := d.Queue(0).WritePacket(arpRequest()); err != nil {
		t.Fatalf("WritePacket: %v", err)
	}
	readARPReply(t, d)
	var buf [64]byte
	if _, err := d.Queue(1).ReadPacket(buf[:]); err == nil {
		t.Error("a detached queue received a packet")
	}
}
