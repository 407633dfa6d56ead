package vmm

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

// netdrvSummary matches netdrv's last line.
var netdrvSummary = regexp.MustCompile(`(?m)^netdrv: pairs=(\d+) sent=(\d+) replies=(\d+)\r?$`)

// parseNetdrv returns pairs, sent and replies from netdrv's output.
func parseNetdrv(out string) (pairs, sent, replies int, ok bool) {
	m := netdrvSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, false
	}
	pairs, _ = strconv.Atoi(m[1])
	sent, _ = strconv.Atoi(m[2])
	replies, _ = strconv.Atoi(m[3])
	return pairs, sent, replies, true
}

// runNetGuest creates the machine inside ns (where its TAPs are found or
// created), calls during (if set) before running it, runs it until it
// stops or timeout, and closes it.
func runNetGuest(t *testing.T, ns *testutil.NetNS, cfg Config, timeout time.Duration, during func(m *Machine)) (Result, string, *Machine) {
	t.Helper()
	r := runGuestIn(t, ns, cfg, timeout, during)
	if r.err != nil {
		t.Fatalf("Run: %v\nconsole:\n%s", r.err, r.out)
	}
	if r.closeErr != nil {
		t.Errorf("Close: %v", r.closeErr)
	}
	return r.res, r.out, r.m
}

func netdrvConfig(t *testing.T, args string, nets ...NetConfig) Config {
	return Config{
		Kernel:     readKernel(t, "netdrv"),
		KernelName: "netdrv",
		Cmdline:    strings.TrimSpace("netdrv.ip=10.0.0.2/24 netdrv.peer=10.0.0.1 " + args),
		Net:        nets,
	}
}

// netdrv pings the host's IP stack through a TAP on every queue pair,
// with interrupts and polling, and must get every reply.
func TestNetdrvOverTAP(t *testing.T) {
	const pings = 20
	for _, tc := range []struct {
		name   string
		queues int
		args   string
		pairs  int
	}{
		{"1 pair", 1, "", 1},
		{"1 pair polling", 1, "netdrv.poll=1", 1},
		{"4 pairs", 4, "", 4},
		{"4 pairs polling", 4, "netdrv.poll=1", 4},
		{"2 of 4 pairs", 4, "netdrv.pairs=2", 2},
		{"4 pairs without EVENT_IDX", 4, "netdrv.event_idx=0", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.RequireKVM(t)
			ns := testutil.NewNetNS(t)
			ns.AddTAP(t, "tap0", "10.0.0.1/24")
			check := testutil.CheckFDLeaks(t)
			cfg := netdrvConfig(t, fmt.Sprintf("netdrv.pings=%d %s", pings, tc.args),
				NetConfig{Backend: NetTAP, TAP: "tap0", QueuePairs: tc.queues})
			res, out, m := runNetGuest(t, ns, cfg, 60*time.Second, nil)
			pairs, sent, replies, ok := parseNetdrv(out)
			if res.Code != 0 || !ok || pairs != tc.pairs || sent != pings*tc.pairs || replies != sent {
				t.Errorf("exit %d (%s), summary pairs=%d sent=%d replies=%d, want exit 0 and pairs=%d sent=replies=%d\nconsole:\n%s",
					res.Code, res.Reason, pairs, sent, replies, tc.pairs, pings*tc.pairs, out)
			}
			stats := m.NetStats()
			if len(stats) != 1 || !strings.Contains(stats[0], "tap=tap0") {
				t.Errorf("NetStats %q", stats)
			}
			t.Logf("%s", stats)
			check()
			// An existing TAP is left as it was.
			if out, err := ns.TryIP("addr", "show", "tap0"); err != nil || !strings.Contains(out, "10.0.0.1/24") {
				t.Errorf("tap0 changed or disappeared: %v\n%s", err, out)
			}
		})
	}
}

// Reflect mode: netdrv's numbered frames come back from a reflector on
// the TAP intact and on the same pair.
func TestNetdrvReflectOverTAP(t *testing.T) {
	testutil.RequireKVM(t)
	ns := testutil.NewNetNS(t)
	ns.AddTAP(t, "tap0", "10.0.0.1/24")
	r := startReflector(t, ns, "tap0")
	cfg := netdrvConfig(t, "netdrv.mode=reflect netdrv.pings=200", NetConfig{Backend: NetTAP, TAP: "tap0", QueuePairs: 1})
	res, out, _ := runNetGuest(t, ns, cfg, 60*time.Second, nil)
	if pairs, sent, replies, ok := parseNetdrv(out); res.Code != 0 || !ok || pairs != 1 || sent != 200 || replies != 200 {
		t.Errorf("exit %d, want 0 and pairs=1 sent=200 replies=200; console:\n%s", res.Code, out)
	}
	if n := r.frames.Load(); n < 200 {
		t.Errorf("the reflector saw %d frames, want 200", n)
	}
}

// A TAP that does not exist is created multi-queue with vnet_hdr, works,
// and is removed when the machine closes.
func TestNetTAPCreatedAndRemoved(t *testing.T) {
	testutil.RequireKVM(t)
	ns := testutil.NewNetNS(t)
	check := testutil.CheckFDLeaks(t)
	cfg := netdrvConfig(t, "netdrv.pings=5", NetConfig{Backend: NetTAP, TAP: "gvtap0", QueuePairs: 2})
	res, out, _ := runNetGuest(t, ns, cfg, 60*time.Second, func(m *Machine) {
		link := ns.IP(t, "-d", "link", "show", "gvtap0")
		for _, want := range []string{"multi_queue", "vnet_hdr", "UP"} {
			if !strings.Contains(link, want) {
				t.Errorf("created TAP lacks %q:\n%s", want, link)
			}
		}
		ns.IP(t, "addr", "add", "10.0.0.1/24", "dev", "gvtap0")
	})
	if pairs, sent, replies, ok := parseNetdrv(out); res.Code != 0 || !ok || pairs != 2 || sent != 10 || replies != 10 {
		t.Errorf("exit %d, want 0 and pairs=2 sent=10 replies=10; console:\n%s", res.Code, out)
	}
	if link, err := ns.TryIP("link", "show", "gvtap0"); err == nil {
		t.Errorf("the TAP govmm created survived Close:\n%s", link)
	}
	check()
}

// Host-side TAP problems are reported by New, naming the device and the
// TAP, and leave nothing behind.
func TestNetTAPErrors(t *testing.T) {
	testutil.RequireKVM(t)
	ns := testutil.NewNetNS(t)
	ns.IP(t, "tuntap", "add", "tun0", "mode", "tun")
	ns.IP(t, "tuntap", "add", "sq0", "mode", "tap")
	kernel := readKernel(t, "netdrv")
	check := testutil.CheckFDLeaks(t)
	for _, tc := range []struct {
		nc   NetConfig
		want string
	}{
		{NetConfig{Backend: NetTAP, TAP: "tun0", QueuePairs: 1}, "net0 (tap): open TAP tun0: the interface exists and is a TUN"},
		{NetConfig{Backend: NetTAP, TAP: "sq0", QueuePairs: 2}, "net0 (tap): open TAP sq0: it is a single-queue TAP"},
		{NetConfig{Backend: NetTAP, TAP: "lo", QueuePairs: 1}, "not a TAP"},
	} {
		err := ns.Do(func() error {
			m, err := New(Config{Kernel: kernel, KernelName: "netdrv", MemSize: 64 << 20, CPUs: 1, Net: []NetConfig{tc.nc}})
			if err == nil {
				m.Close()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with %+v: %v, want %q", tc.nc, err, tc.want)
		}
	}
	check()
}
