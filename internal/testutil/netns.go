package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NetNS is a network namespace a test created (with `ip netns add`); it is
// deleted when the test ends. Tests send traffic only inside namespaces
// like this one: interfaces are set up inside it with IP (ip -n NAME ...),
// programs run inside it through Command, and Go code that must run inside
// it (opening a TAP, test sockets) runs on a locked thread switched into
// it (Do).
type NetNS struct {
	Name string
}

// NewNetNS creates a fresh namespace with a unique name and loopback up.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	RequireTUN(t)
	ip := RequireCommand(t, "ip")
	b := make([]byte, 4)
	rand.Read(b)
	ns := &NetNS{Name: "govmm-t-" + hex.EncodeToString(b)}
	if out, err := exec.Command(ip, "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns.Name, err, out)
		}
	})
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n NS args...` and fails the test on error.
func (ns *NetNS) IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.TryIP(args...)
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// TryIP runs `ip -n NS args...` and returns its combined output and error,
// for tests that expect it may fail (a link that should be gone).
func (ns *NetNS) TryIP(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Do runs fn on an OS thread switched into the namespace and back, and
// returns fn's error (or the error of switching). Threads the runtime
// starts meanwhile do not inherit the namespace (a locked thread never
// spawns them), and if switching back fails the thread dies with its
// goroutine instead of returning to the pool.
func (ns *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := unix.Open("/run/netns/"+ns.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns.Name, err)
			return
		}
		defer unix.Close(target)
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %v (after %v)", err, ferr)
			return // the thread stays locked and exits with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Command returns a command that runs inside the namespace.
func (ns *NetNS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// AddTAP creates a multi-queue TAP with a vnet header in the namespace,
// gives it cidr (e.g. "10.0.0.1/24") and brings it up.
func (ns *NetNS) AddTAP(t testing.TB, name, cidr string) {
	t.Helper()
	ns.IP(t, "tuntap", "add", "dev", name, "mode", "tap", "multi_queue", "vnet_hdr")
	ns.IP(t, "addr", "add", cidr, "dev", name)
	ns.IP(t, "link", "set", name, "up")
}

// LinkExists reports whether the namespace has an interface called name.
func (ns *NetNS) LinkExists(name string) bool {
	return exec.Command("ip", "-n", ns.Name, "link", "show", "dev", name).Run() == nil
}

// StartDHCP runs dnsmasq as a DHCP server (no DNS) on iface inside the
// namespace, handing out exactly addr, until the test ends.
func (ns *NetNS) StartDHCP(t testing.TB, iface, addr string) {
	t.Helper()
	dnsmasq := RequireCommand(t, "dnsmasq")
	dir := t.TempDir()
	cmd := ns.Command(dnsmasq, "--no-daemon", "--port=0", "--no-resolv", "--no-hosts",
		"--interface="+iface, "--bind-interfaces", "--except-interface=lo",
		"--dhcp-range="+addr+","+addr+",255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"),
		"--log-dhcp")
	log, err := os.Create(filepath.Join(dir, "dnsmasq.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.log"))
			t.Logf("dnsmasq log:\n%s", b)
		}
	})
	// Give it a moment to bind; the guest's DHCP client retries anyway.
	time.Sleep(200 * time.Millisecond)
}
