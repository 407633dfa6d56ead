package vmm

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/vhostnet"
)

// TestVhostNetMissingFailsAtStart: --net tap=NAME,vhost=on on a host
// without /dev/vhost-net fails when the machine is created, saying so,
// and before any TAP is touched.
func TestVhostNetMissingFailsAtStart(t *testing.T) {
	testutil.RequireKVM(t)
	if _, err := os.Stat(vhostnet.VhostNetPath); err == nil {
		t.Skip(vhostnet.VhostNetPath + " exists on this host")
	}
	nc, err := ParseNetSpec("tap=govmmvh0,vhost=on,queues=2")
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Kernel: DemoKernel(), KernelName: "demo", MemSize: 64 << 20, CPUs: 1, Net: []NetConfig{nc}})
	if !errors.Is(err, vhostnet.ErrNoVhostNet) || !strings.Contains(err.Error(), "vhost-net is not available") {
		t.Fatalf("err = %v, want one saying kernel vhost-net is missing", err)
	}
}

// TestVhostUserNoBackend: a vhost-user device whose socket nobody listens
// on fails the machine's creation (after vhostDialTimeout) with the socket
// named.
func TestVhostUserNoBackend(t *testing.T) {
	testutil.RequireKVM(t)
	sock := t.TempDir() + "/none.sock"
	nc, err := ParseNetSpec("vhost-user=" + sock)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Kernel: DemoKernel(), KernelName: "demo", MemSize: 64 << 20, CPUs: 1, Net: []NetConfig{nc}}
	_, err = New(cfg)
	if err == nil || !strings.Contains(err.Error(), sock) {
		t.Fatalf("err = %v, want one naming %s", err, sock)
	}
}
