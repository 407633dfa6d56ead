package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
)

// reflectEtherType is netdrv's reflect-mode frame type.
const reflectEtherType = 0x88b5

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// reflector is the peer of netdrv's reflect mode: an AF_PACKET socket on
// a TAP, inside the test's namespace, that sends every frame of type
// 0x88b5 the guest sent back with the MAC addresses swapped. It counts
// the frames and the time from the first to the last.
type reflector struct {
	f           *os.File
	done        chan struct{}
	frames      atomic.Int64
	first, last atomic.Int64 // UnixNano
}

func startReflector(tb testing.TB, ns *testutil.NetNS, ifname string) *reflector {
	tb.Helper()
	r := &reflector{done: make(chan struct{})}
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(reflectEtherType)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		// A burst of the guest's frames must fit in the socket's buffers
		// while the reflector catches up.
		for _, opt := range []int{unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 16<<20); err != nil {
				unix.Close(fd)
				return fmt.Errorf("reflector socket buffers: %w", err)
			}
		}
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(reflectEtherType), Ifindex: ifi.Index})
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind to %s: %w", ifname, err)
		}
		r.f = os.NewFile(uintptr(fd), "reflector")
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	rc, err := r.f.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(r.done)
		buf := make([]byte, 65536)
		for {
			var n int
			var from unix.Sockaddr
			var rerr error
			if err := rc.Read(func(fd uintptr) bool {
				n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
				return rerr != unix.EAGAIN
			}); err != nil {
				return // closed
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); rerr != nil || n < 14 || (ok && ll.Pkttype == unix.PACKET_OUTGOING) {
				continue
			}
			p := buf[:n]
			var mac [6]byte
			copy(mac[:], p[:6])
			copy(p[:6], p[6:12])
			copy(p[6:12], mac[:])
			var werr error
			rc.Write(func(fd uintptr) bool {
				_, werr = unix.Write(int(fd), p)
				return werr != unix.EAGAIN
			})
			now := time.Now().UnixNano()
			r.first.CompareAndSwap(0, now)
			r.last.Store(now)
			r.frames.Add(1)
		}
	}()
	tb.Cleanup(r.stop)
	return r
}

func (r *reflector) stop() {
	r.f.Close()
	<-r.done
}

// reset starts a new count; rate returns frames per second since.
func (r *reflector) reset() { r.frames.Store(0); r.first.Store(0); r.last.Store(0) }

func (r *reflector) rate() float64 {
	span := time.Duration(r.last.Load() - r.first.Load())
	if span <= 0 {
		return 0
	}
	return float64(r.frames.Load()) / span.Seconds()
}

// statsFields parses "key=value" fields of a --stats line.
func statsFields(line string) map[string]float64 {
	out := map[string]float64{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			if x, err := strconv.ParseFloat(v, 64); err == nil {
				out[k] = x
			}
		}
	}
	return out
}

// netRun is what one netdrv reflect run measured.
type netRun struct {
	txPkts, rxPkts, txPPS, rxPPS, kicks, irqs, reflectPPS float64
}

func (a *netRun) add(b netRun) {
	a.txPkts += b.txPkts
	a.rxPkts += b.rxPkts
	a.txPPS += b.txPPS
	a.rxPPS += b.rxPPS
	a.kicks += b.kicks
	a.irqs += b.irqs
	a.reflectPPS += b.reflectPPS
}

// runReflect boots netdrv in reflect mode on one queue pair and returns
// the device's counters.
func runReflect(b *testing.B, ns *testutil.NetNS, r *reflector, kernel []byte, frames int, args string) netRun {
	b.Helper()
	var out testutil.SyncBuffer
	cfg := Config{
		Kernel: kernel, KernelName: "netdrv", MemSize: 64 << 20, CPUs: 1, Console: &out,
		Cmdline: fmt.Sprintf("netdrv.mode=reflect netdrv.pings=%d netdrv.timeout=20000 %s", frames, args),
		Net:     []NetConfig{{Backend: NetTAP, TAP: "tap0", QueuePairs: 1}},
	}
	var m *Machine
	if err := ns.Do(func() (err error) { m, err = New(cfg); return err }); err != nil {
		b.Fatalf("New: %v", err)
	}
	defer m.Close()
	r.reset()
	ctx, cancel := context.WithTimeoutCause(context.Background(), 60*time.Second, errors.New("benchmark timeout"))
	defer cancel()
	res, err := m.Run(ctx)
	if err != nil || res.Code != 0 {
		b.Fatalf("netdrv reflect: exit %d (%s), %v\nconsole:\n%s", res.Code, res.Reason, err, out.String())
	}
	stats := m.NetStats()
	if len(stats) != 1 {
		b.Fatalf("NetStats %q", stats)
	}
	f := statsFields(stats[0])
	if f["tx_packets"] < float64(frames) || f["rx_packets"] < float64(frames) {
		b.Fatalf("stats %q: fewer than %d packets each way", stats[0], frames)
	}
	return netRun{
		txPkts: f["tx_packets"], rxPkts: f["rx_packets"], txPPS: f["tx_pps"], rxPPS: f["rx_pps"],
		kicks: f["tx_kicks"] + f["rx_kicks"], irqs: f["interrupts"], reflectPPS: r.rate(),
	}
}

// BenchmarkNetTAPReflect measures one queue pair of the userspace
// virtio-net data path under load: netdrv sends 1024 frames as fast as
// its ring allows to a reflector on the TAP, which sends each back.
// Reported, for one run with EVENT_IDX and one without, per iteration:
// guest-to-TAP and TAP-to-guest packets per second (the device's
// counters), guest kicks (ioeventfd signals) and interrupts per 1000
// packets (both directions), and the ratios between the two runs.
func BenchmarkNetTAPReflect(b *testing.B) {
	testutil.RequireKVM(b)
	ns := testutil.NewNetNS(b)
	ns.IP(b, "tuntap", "add", "tap0", "mode", "tap", "multi_queue", "vnet_hdr")
	ns.IP(b, "link", "set", "tap0", "txqueuelen", "4096", "up")
	r := startReflector(b, ns, "tap0")
	kernel, err := os.ReadFile(testutil.TinyKernel(b, "netdrv"))
	if err != nil {
		b.Fatal(err)
	}
	const frames = 1024
	var on, off netRun
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		on.add(runReflect(b, ns, r, kernel, frames, ""))
		off.add(runReflect(b, ns, r, kernel, frames, "netdrv.event_idx=0"))
	}
	b.StopTimer()
	n := float64(b.N)
	per1000 := func(x, run netRun) float64 { return 1000 * x.kicks / (run.txPkts + run.rxPkts) }
	irq1000 := func(run netRun) float64 { return 1000 * run.irqs / (run.txPkts + run.rxPkts) }
	kOn, kOff := per1000(on, on), per1000(off, off)
	iOn, iOff := irq1000(on), irq1000(off)
	b.ReportMetric(on.txPPS/n, "g2t_pps")
	b.ReportMetric(on.rxPPS/n, "t2g_pps")
	b.ReportMetric(off.txPPS/n, "g2t_pps_noevidx")
	b.ReportMetric(off.rxPPS/n, "t2g_pps_noevidx")
	b.ReportMetric(kOn, "kicks/1kpkt")
	b.ReportMetric(iOn, "irqs/1kpkt")
	b.ReportMetric(kOff, "kicks/1kpkt_noevidx")
	b.ReportMetric(iOff, "irqs/1kpkt_noevidx")
	if kOff > 0 {
		b.ReportMetric(kOn/kOff, "kick_ratio_evidx/noevidx")
	}
	if iOff > 0 {
		b.ReportMetric(iOn/iOff, "irq_ratio_evidx/noevidx")
	}
	if off.txPPS > 0 {
		b.ReportMetric(on.txPPS/off.txPPS, "g2t_ratio_evidx/noevidx")
	}
	b.ReportMetric(on.reflectPPS/n, "reflected_pps")
}

// BenchmarkNetdrvGovmmVsQEMU runs the same guest workload (netdrv reflect
// mode, one queue pair, 1024 frames) under govmm and under QEMU microvm
// (virtio-net-device over the same TAP, vhost off) and reports, measured
// at the reflector on the TAP side, the reflected frames per second and
// the time from launching the VMM to the first reflected frame, with
// their ratios govmm/QEMU. (QEMU's exits cannot be counted from here;
// govmm's kicks and interrupts are in BenchmarkNetTAPReflect.)
func BenchmarkNetdrvGovmmVsQEMU(b *testing.B) {
	testutil.RequireKVM(b)
	testutil.RequireCommand(b, "qemu-system-x86_64")
	ns := testutil.NewNetNS(b)
	ns.IP(b, "tuntap", "add", "tap0", "mode", "tap", "multi_queue", "vnet_hdr")
	ns.IP(b, "link", "set", "tap0", "txqueuelen", "4096", "up")
	r := startReflector(b, ns, "tap0")
	path := testutil.TinyKernel(b, "netdrv")
	kernel, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	const frames = 1024
	args := fmt.Sprintf("netdrv.mode=reflect netdrv.pings=%d netdrv.pairs=1 netdrv.timeout=20000", frames)
	var gPPS, qPPS, gFirst, qFirst float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		run := runReflect(b, ns, r, kernel, frames, "")
		gPPS += run.reflectPPS
		gFirst += float64(r.first.Load()-start.UnixNano()) / 1e6

		r.reset()
		start = time.Now()
		code, out := runNetdrvQEMU(b, ns, path, 2, args)
		if _, sent, replies, ok := parseNetdrv(out); code != 1 || !ok || sent != frames || replies != frames {
			b.Fatalf("netdrv under QEMU: exit %d\n%s", code, out)
		}
		qPPS += r.rate()
		qFirst += float64(r.first.Load()-start.UnixNano()) / 1e6
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(gPPS/n, "govmm_reflected_pps")
	b.ReportMetric(qPPS/n, "qemu_reflected_pps")
	b.ReportMetric(gFirst/n, "govmm_first_frame_ms")
	b.ReportMetric(qFirst/n, "qemu_first_frame_ms")
	if qPPS > 0 {
		b.ReportMetric(gPPS/qPPS, "pps_ratio_govmm/qemu")
	}
	if qFirst > 0 {
		b.ReportMetric(gFirst/qFirst, "first_frame_ratio_govmm/qemu")
	}
}
