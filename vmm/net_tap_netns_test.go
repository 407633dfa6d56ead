package vmm

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
)

// tapTestNS is a network namespace created for one test and deleted when
// it ends. Interfaces are set up inside it with ip -n, and Go code that
// must run inside it (opening the TAP in New, test sockets) runs on a
// locked thread switched into it (do): no test traffic leaves it.
type tapTestNS struct {
	name string
	fd   int
}

func newTapTestNS(t testing.TB) *tapTestNS {
	t.Helper()
	testutil.RequireTUN(t)
	testutil.RequireCommand(t, "ip")
	var b [4]byte
	rand.Read(b[:])
	n := &tapTestNS{name: "govmm-vmm-" + hex.EncodeToString(b[:]), fd: -1}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", n.name, err, out)
	}
	t.Cleanup(func() {
		if n.fd >= 0 {
			unix.Close(n.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", n.name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+n.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open namespace %s: %v", n.name, err)
	}
	n.fd = fd
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// withTAP adds a multi-queue vnet_hdr TAP at addr (CIDR), up.
func (n *tapTestNS) withTAP(t testing.TB, name, addr string) {
	t.Helper()
	n.ip(t, "tuntap", "add", name, "mode", "tap", "multi_queue", "vnet_hdr")
	n.ip(t, "addr", "add", addr, "dev", name)
	n.ip(t, "link", "set", name, "up")
}

func (n *tapTestNS) ip(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.tryIP(args...)
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return out
}

func (n *tapTestNS) tryIP(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

// do runs fn on an OS thread switched into the namespace and back.
// Threads the runtime starts meanwhile do not inherit the namespace (a
// locked thread never spawns them), and if switching back fails the
// thread dies with its goroutine instead of returning to the pool.
func (n *tapTestNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %v (after %v)", err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
