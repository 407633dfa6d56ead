package attachbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/vhostnet/vunet"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// Limits on Options.
const (
	MaxDevices = 19 // the GSIs govmm gives virtio devices
	MaxPairs   = virtio.NetMaxQueuePairs
	MaxRounds  = 100
)

// Options configures Run.
type Options struct {
	Devices int // virtio-net devices, each with its own backend
	Pairs   int // queue pairs per device (2 notifiers each)
	Rounds  int // attach/detach rounds per mode; medians are reported
	// QueueSize is each data queue's size (default 256).
	QueueSize uint16
	// Settle is an unmeasured pause between phases (see
	// notifierbench.Options.Settle: it keeps the deferred SRCU grace
	// period of one phase's registrations out of the next one's time).
	Settle time.Duration
	// KVMPath is the KVM device; empty means kvm.DevicePath.
	KVMPath string
	// Dir holds the backends' sockets; empty means a fresh temporary
	// directory, removed afterwards.
	Dir string
}

// DefaultOptions is the scenario of the seed change: 15 devices of 32
// pairs (960 queue notifiers).
func DefaultOptions() Options {
	return Options{Devices: 15, Pairs: 32, Rounds: 7, QueueSize: 256, Settle: 25 * time.Millisecond}
}

func (o Options) validate() error {
	switch {
	case o.Devices < 1 || o.Devices > MaxDevices:
		return fmt.Errorf("devices %d: want 1 to %d", o.Devices, MaxDevices)
	case o.Pairs < 1 || o.Pairs > MaxPairs:
		return fmt.Errorf("pairs %d: want 1 to %d", o.Pairs, MaxPairs)
	case o.Rounds < 1 || o.Rounds > MaxRounds:
		return fmt.Errorf("rounds %d: want 1 to %d", o.Rounds, MaxRounds)
	case o.QueueSize == 0 || o.QueueSize&(o.QueueSize-1) != 0 || o.QueueSize > 1024:
		return fmt.Errorf("queue size %d: want a power of two up to 1024", o.QueueSize)
	case o.Settle < 0:
		return errors.New("negative settle time")
	}
	return nil
}

// Phases is one operation's time split, in milliseconds (medians over the
// rounds), and its ioeventfd commit count (one round).
type Phases struct {
	NotifierMS float64 `json:"notifier_ms"`
	BackendMS  float64 `json:"backend_ms"`
	TotalMS    float64 `json:"total_ms"`
	Commits    uint64  `json:"commits"`
}

// ModeResult is one commit mode's attach and detach.
type ModeResult struct {
	Mode   string `json:"mode"`
	Attach Phases `json:"attach"`
	Detach Phases `json:"detach"`
}

// Speedups are per-queue time / batched time, from the medians.
type Speedups struct {
	AttachNotifier float64 `json:"attach_notifier"`
	DetachNotifier float64 `json:"detach_notifier"`
	AttachTotal    float64 `json:"attach_total"`
	DetachTotal    float64 `json:"detach_total"`
}

// Result is what Run measured.
type Result struct {
	Devices   int          `json:"devices"`
	Pairs     int          `json:"pairs"`
	Notifiers int          `json:"notifiers"`
	Rounds    int          `json:"rounds"`
	Modes     []ModeResult `json:"modes"`
	Speedup   Speedups     `json:"speedup_batched_vs_per_queue"`
}

// Mode returns the named mode's result.
func (r *Result) Mode(name string) (ModeResult, bool) {
	for _, m := range r.Modes {
		if m.Mode == name {
			return m, true
		}
	}
	return ModeResult{}, false
}

// WriteTable prints r for people.
func (r *Result) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "%d devices x %d pairs = %d queue notifiers, in-process vhost-user backends, median of %d rounds\n\n",
		r.Devices, r.Pairs, r.Notifiers, r.Rounds)
	fmt.Fprintf(w, "%-10s %-7s %12s %12s %10s %8s\n", "mode", "op", "notifier ms", "backend ms", "total ms", "commits")
	for _, m := range r.Modes {
		for _, op := range []struct {
			name string
			p    Phases
		}{{"attach", m.Attach}, {"detach", m.Detach}} {
			fmt.Fprintf(w, "%-10s %-7s %12.2f %12.2f %10.2f %8d\n", m.Mode, op.name, op.p.NotifierMS, op.p.BackendMS, op.p.TotalMS, op.p.Commits)
		}
	}
	s := r.Speedup
	_, err := fmt.Fprintf(w, "\nbatched vs per-queue: notifier phase %.1fx faster to attach, %.1fx to detach; whole attach %.2fx, whole detach %.2fx\n",
		s.AttachNotifier, s.DetachNotifier, s.AttachTotal, s.DetachTotal)
	return err
}

// rig is the VM, its devices and their backends.
type rig struct {
	opts    Options
	sys     *kvm.System
	vm      *kvm.VM
	ram     *vt.SharedMemory
	space   *kvm.IoEventSpace
	att     *vhostnet.Attacher
	calls   []*kvm.EventFD
	gsis    []uint32
	devs    []*vhostnet.NetDevice
	trs     []*virtio.MMIOTransport
	drivers [][]*vt.Driver
	feat    []uint64

	srvCancel context.CancelFunc
	srvDone   []chan error
	lns       []*net.UnixListener
	nulls     []*nullNet
	dir       string
	tmp       bool
}

const (
	ramGPA  = 0
	mmioGPA = 0xd000_0000
	gsiBase = 5
)

// Run measures. ctx cancels it between phases.
func Run(ctx context.Context, o Options) (_ *Result, err error) {
	if o.QueueSize == 0 {
		o.QueueSize = 256
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("bench attach: %w", err)
	}
	r := &rig{opts: o}
	defer func() {
		if cerr := r.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := r.setup(); err != nil {
		return nil, fmt.Errorf("bench attach: %w", err)
	}
	modes := []vhostnet.CommitMode{vhostnet.CommitBatched, vhostnet.CommitPerQueue}
	samples := map[vhostnet.CommitMode]*[4][]time.Duration{}
	commits := map[vhostnet.CommitMode][2]uint64{}
	for _, m := range modes {
		samples[m] = &[4][]time.Duration{}
	}
	for round := range o.Rounds {
		order := modes
		if round%2 == 1 {
			order = []vhostnet.CommitMode{modes[1], modes[0]}
		}
		for _, m := range order {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			a, d, err := r.round(m)
			if err != nil {
				return nil, fmt.Errorf("bench attach: round %d, %v: %w", round, m, err)
			}
			s := samples[m]
			s[0] = append(s[0], a.NotifierTime)
			s[1] = append(s[1], a.BackendTime)
			s[2] = append(s[2], d.NotifierTime)
			s[3] = append(s[3], d.BackendTime)
			commits[m] = [2]uint64{a.commits, d.commits}
		}
	}
	res := &Result{Devices: o.Devices, Pairs: o.Pairs, Notifiers: 2 * o.Devices * o.Pairs, Rounds: o.Rounds}
	for _, m := range modes {
		s := samples[m]
		an, ab, dn, db := median(s[0]), median(s[1]), median(s[2]), median(s[3])
		res.Modes = append(res.Modes, ModeResult{
			Mode:   m.String(),
			Attach: Phases{NotifierMS: ms(an), BackendMS: ms(ab), TotalMS: ms(an + ab), Commits: commits[m][0]},
			Detach: Phases{NotifierMS: ms(dn), BackendMS: ms(db), TotalMS: ms(dn + db), Commits: commits[m][1]},
		})
	}
	b, p := res.Modes[0], res.Modes[1]
	res.Speedup = Speedups{
		AttachNotifier: ratio(p.Attach.NotifierMS, b.Attach.NotifierMS),
		DetachNotifier: ratio(p.Detach.NotifierMS, b.Detach.NotifierMS),
		AttachTotal:    ratio(p.Attach.TotalMS, b.Attach.TotalMS),
		DetachTotal:    ratio(p.Detach.TotalMS, b.Detach.TotalMS),
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// opTimes is one operation's phases, from the Attacher's counters.
type opTimes struct {
	NotifierTime, BackendTime time.Duration
	commits                   uint64
}

// round attaches every device (DRIVER_OK in one batch), checks they all
// run, and detaches them (resets in one batch).
func (r *rig) round(m vhostnet.CommitMode) (attach, detach opTimes, err error) {
	if err := r.att.SetMode(m); err != nil {
		return attach, detach, err
	}
	s0 := r.att.Stats()
	r.att.Batch(func() {
		for i, tr := range r.trs {
			vt.InitMMIO(tr, r.feat[i], r.drivers[i]...)
		}
	})
	s1 := r.att.Stats()
	for i, tr := range r.trs {
		if s := vt.ReadReg(tr, vt.RegStatus); s&virtio.StatusNeedsReset != 0 || s&virtio.StatusDriverOK == 0 || !r.devs[i].Attached() {
			return attach, detach, fmt.Errorf("device %d did not start (status %#x)", i, s)
		}
	}
	if n := r.space.Len(); n != 2*r.opts.Devices*r.opts.Pairs {
		return attach, detach, fmt.Errorf("%d notifiers registered, want %d", n, 2*r.opts.Devices*r.opts.Pairs)
	}
	time.Sleep(r.opts.Settle)
	r.att.Batch(func() {
		for _, tr := range r.trs {
			vt.WriteReg(tr, vt.RegStatus, 0)
		}
	})
	s2 := r.att.Stats()
	if n := r.space.Len(); n != 0 {
		return attach, detach, fmt.Errorf("%d notifiers left after detach", n)
	}
	time.Sleep(r.opts.Settle)
	attach = opTimes{s1.AttachNotifierTime - s0.AttachNotifierTime, s1.AttachBackendTime - s0.AttachBackendTime, s1.AttachCommits - s0.AttachCommits}
	detach = opTimes{s2.DetachNotifierTime - s1.DetachNotifierTime, s2.DetachBackendTime - s1.DetachBackendTime, s2.DetachCommits - s1.DetachCommits}
	if s2.Failures != s0.Failures {
		return attach, detach, fmt.Errorf("%d device attaches failed", s2.Failures-s0.Failures)
	}
	return attach, detach, nil
}

func (r *rig) setup() error {
	o := r.opts
	var err error
	path := o.KVMPath
	if path == "" {
		path = kvm.DevicePath
	}
	if r.sys, err = kvm.Open(path); err != nil {
		return err
	}
	if r.vm, err = r.sys.CreateVM(); err != nil {
		return err
	}
	if err := r.vm.CreateIRQChip(); err != nil {
		return err
	}
	r.space = kvm.NewIoEventSpace(r.vm)
	if r.att, err = vhostnet.NewAttacher(vhostnet.AttacherConfig{IoEvents: r.space}); err != nil {
		return err
	}

	// Guest RAM: a memfd (the backends map it), room for every ring.
	queues := o.Devices * (2*o.Pairs + 1)
	size := (queues*(16*int(o.QueueSize)+2*(6+8*int(o.QueueSize))+64) + 1<<20 + 0xfffff) &^ 0xfffff
	if r.ram, err = vt.NewSharedMemory("bench-attach-ram", ramGPA, size); err != nil {
		return err
	}
	if err := r.vm.SetUserMemoryRegion(0, ramGPA, r.ram.Buf, 0); err != nil {
		return err
	}
	mem, gm := r.ram.Memory, r.ram.Guest
	shared := []vhostnet.MemoryRegion{vhostnet.SharedRegion(ramGPA, r.ram.Buf, r.ram.File, 0)}

	// Backends.
	r.dir = o.Dir
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "govmm-bench-attach-"); err != nil {
			return err
		}
		r.tmp = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.srvCancel = cancel
	quiet := slog.New(slog.DiscardHandler)
	for i := range o.Devices {
		nn, err := newNullNet(o.Pairs)
		if err != nil {
			return err
		}
		r.nulls = append(r.nulls, nn)
		srv, err := vunet.New(vunet.Config{Backend: nn, QueuePairs: o.Pairs, Logger: quiet})
		if err != nil {
			return err
		}
		sock := filepath.Join(r.dir, fmt.Sprintf("vu%d.sock", i))
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			return err
		}
		r.lns = append(r.lns, ln)
		done := make(chan error, 1)
		r.srvDone = append(r.srvDone, done)
		go func() { done <- srv.Serve(ctx, ln) }()

		call, err := kvm.NewEventFD()
		if err != nil {
			return err
		}
		r.calls = append(r.calls, call)
		gsi := uint32(gsiBase + i)
		if err := r.vm.AssignIRQFD(call, gsi); err != nil {
			return err
		}
		r.gsis = append(r.gsis, gsi)
		d, err := vhostnet.NewNetDevice(vhostnet.NetConfig{
			Connector: &vhostnet.UserClient{Path: sock, Opts: vhostuser.Options{Timeout: 10 * time.Second}},
			Attacher:  r.att, QueuePairs: o.Pairs, QueueSize: o.QueueSize, Memory: shared, Call: call,
		})
		if err != nil {
			return err
		}
		r.devs = append(r.devs, d)
		if d.QueuePairs() != o.Pairs {
			return fmt.Errorf("device %d: %d pairs", i, d.QueuePairs())
		}
		tr, err := virtio.NewMMIOTransport(d, virtio.MMIOConfig{
			Base: mmioGPA + uint64(i)*virtio.MMIOWindowSize, Mem: gm, IRQ: irqTrigger{call},
			IoEvents: r.space, ExternalNotifiers: true, UsedBufferAlways: true,
		})
		if err != nil {
			return err
		}
		r.trs = append(r.trs, tr)
		var drivers []*vt.Driver
		for q := range 2 * o.Pairs {
			dr, err := vt.NewDriver(mem, o.QueueSize)
			if err != nil {
				return fmt.Errorf("device %d queue %d rings: %w", i, q, err)
			}
			drivers = append(drivers, dr)
		}
		// The control queue stays in the VMM: a driver sets it up, but
		// it has no notifier.
		ctrl, err := vt.NewDriver(mem, 64)
		if err != nil {
			return err
		}
		r.drivers = append(r.drivers, append(drivers, ctrl))
		r.feat = append(r.feat, d.Features()|virtio.FeatureVersion1)
	}
	return nil
}

type irqTrigger struct{ ev *kvm.EventFD }

func (t irqTrigger) Trigger() error { return t.ev.Signal() }

func (r *rig) close() error {
	var errs []error
	if r.att != nil {
		r.att.Batch(func() {
			for _, tr := range r.trs {
				tr.Close()
			}
		})
	}
	for _, d := range r.devs {
		errs = append(errs, d.Close())
	}
	if r.att != nil {
		errs = append(errs, r.att.Close())
	}
	if r.srvCancel != nil {
		r.srvCancel()
		for _, done := range r.srvDone {
			<-done
		}
	}
	for _, ln := range r.lns {
		ln.Close()
	}
	for _, n := range r.nulls {
		n.close()
	}
	for i, gsi := range r.gsis {
		errs = append(errs, r.vm.DeassignIRQFD(r.calls[i], gsi))
	}
	for _, c := range r.calls {
		c.Close()
	}
	if r.vm != nil {
		errs = append(errs, r.vm.Close())
	}
	if r.sys != nil {
		errs = append(errs, r.sys.Close())
	}
	if r.ram != nil {
		errs = append(errs, r.ram.Close())
	}
	if r.tmp {
		os.RemoveAll(r.dir)
	}
	return errors.Join(errs...)
}

// nullNet is a backend whose endpoints drop what they are sent and never
// have a packet: the bench measures control, not data.
type nullNet struct {
	ev  *os.File // an eventfd that never becomes readable
	rc  syscall.RawConn
	eps []nullEndpoint
}

func newNullNet(pairs int) (*nullNet, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "null-endpoint")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	n := &nullNet{ev: f, rc: rc}
	for range pairs {
		n.eps = append(n.eps, nullEndpoint{rc: rc})
	}
	return n, nil
}

func (n *nullNet) close()                                    { n.ev.Close() }
func (n *nullNet) Pair(i int) virtio.PollablePacketIO        { return n.eps[i] }
func (n *nullNet) SetOffloads(virtio.NetOffloads) error      { return nil }
func (n *nullNet) EnablePair(int, bool) error                { return nil }
func (e nullEndpoint) ReadPacket([]byte) (int, error)        { return 0, virtio.ErrNoPacket }
func (e nullEndpoint) WritePacket([][]byte) error            { return nil }
func (e nullEndpoint) SyscallConn() (syscall.RawConn, error) { return e.rc, nil }

type nullEndpoint struct{ rc syscall.RawConn }
