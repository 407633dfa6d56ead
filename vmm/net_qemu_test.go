package vmm

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

// runNetdrvQEMU boots netdrv under QEMU's microvm machine inside ns, with
// a virtio-net-device over the namespace's tap0 (queues TAP queues), and
// returns QEMU's exit status and the guest's console.
func runNetdrvQEMU(t testing.TB, ns *testutil.NetNS, kernel string, queues int, args string) (int, string) {
	t.Helper()
	qemu := testutil.RequireCommand(t, "qemu-system-x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	netdev := fmt.Sprintf("tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off,queues=%d", queues)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, qemu,
		"-M", "microvm,acpi=off", "-accel", "kvm", "-m", "64M",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0x501,iosize=1",
		"-global", "virtio-mmio.force-legacy=false",
		"-netdev", netdev, "-device", "virtio-net-device,netdev=n0,mq=on",
		"-kernel", kernel, "-append", args)
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("QEMU did not finish within 60 s; output:\n%s", out)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		if exit.ExitCode() != 1 && !strings.Contains(string(out), "netdrv:") {
			t.Logf("QEMU stderr:\n%s", exit.Stderr)
		}
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("run QEMU: %v", err)
	return 0, ""
}

// The same netdrv passes under QEMU microvm with a TAP backend: the
// driver is checked against a virtio-net device govmm did not write. QEMU
// exits with (debug-exit value << 1) | 1, so success is 1.
func TestNetdrvUnderQEMU(t *testing.T) {
	testutil.RequireKVM(t)
	kernel := testutil.TinyKernel(t, "netdrv")
	const pings = 10
	ping := fmt.Sprintf("netdrv.ip=10.0.0.2/24 netdrv.peer=10.0.0.1 netdrv.pings=%d netdrv.timeout=15000", pings)
	for _, tc := range []struct {
		name    string
		args    string
		pairs   int
		reflect bool
	}{
		{"1 pair", ping + " netdrv.pairs=1", 1, false},
		{"4 pairs", ping, 4, false},
		{"4 pairs polling", ping + " netdrv.poll=1", 4, false},
		{"4 pairs level interrupts", ping + " netdrv.irq=level", 4, false},
		{"4 pairs without EVENT_IDX", ping + " netdrv.event_idx=0", 4, false},
		{"1 pair reflect", fmt.Sprintf("netdrv.mode=reflect netdrv.pings=%d netdrv.pairs=1 netdrv.timeout=15000", pings), 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testutil.NewNetNS(t)
			ns.AddTAP(t, "tap0", "10.0.0.1/24")
			if tc.reflect {
				startReflector(t, ns, "tap0")
			}
			code, out := runNetdrvQEMU(t, ns, kernel, 4, tc.args)
			pairs, sent, replies, ok := parseNetdrv(out)
			if code != 1 || !ok || pairs != tc.pairs || sent != pings*tc.pairs || replies != sent {
				t.Errorf("QEMU exit %d (want 1), summary pairs=%d sent=%d replies=%d (want %d, %d, %d)\noutput:\n%s",
					code, pairs, sent, replies, tc.pairs, pings*tc.pairs, pings*tc.pairs, out)
			}
		})
	}
}
