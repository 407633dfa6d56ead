package notifierbench

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// The modes, in the order Run measures and reports them.
const (
	ModeRaw           = "raw"
	ModeBatchedDevice = "batched-device"
	ModeBatchedAll    = "batched-all"
	ModePerQueue      = "per-queue"
)

// Modes returns every mode in report order.
func Modes() []string {
	return []string{ModeRaw, ModeBatchedDevice, ModeBatchedAll, ModePerQueue}
}

// Device layout: device d's virtio-mmio window starts at MMIOBase +
// d*MMIOStride; each queue's notifier is a 4-byte write of the queue index
// to its QueueNotify register.
const (
	MMIOBase          = 0xd0000000
	MMIOStride        = 0x1000
	QueueNotifyOffset = 0x50
)

// Limits on Options, to keep a mistyped flag from exhausting the host.
const (
	MaxDevices = 4096
	MaxQueues  = 1024
	MaxEntries = 1 << 16
	MaxRounds  = 1000
)

// Options configures Run.
type Options struct {
	Devices int // virtio-mmio devices
	Queues  int // queues per device
	Rounds  int // measurements per mode; the median is reported
	// Settle is a pause (not measured) before each measured phase. On
	// kernels where registering an ioeventfd defers its SRCU grace period,
	// the first deassign after a burst of assigns waits for that grace
	// period (several ms); a real attach and detach are far apart, so the
	// pause keeps one phase's pending grace period out of the next one's
	// time. 0 means no pause.
	Settle time.Duration
	// KVMPath is the KVM device; empty means kvm.DevicePath.
	KVMPath string
}

// DefaultOptions are the sizes of the scenario govmm is built for: 15
// vhost-user-net devices of 64 queues each.
func DefaultOptions() Options {
	return Options{Devices: 15, Queues: 64, Rounds: 5, Settle: 25 * time.Millisecond}
}

func (o Options) validate() error {
	switch {
	case o.Devices < 1 || o.Devices > MaxDevices:
		return fmt.Errorf("devices %d: want 1..%d", o.Devices, MaxDevices)
	case o.Queues < 1 || o.Queues > MaxQueues:
		return fmt.Errorf("queues %d: want 1..%d", o.Queues, MaxQueues)
	case o.Devices*o.Queues > MaxEntries:
		return fmt.Errorf("%d devices x %d queues = %d ioeventfds: at most %d", o.Devices, o.Queues, o.Devices*o.Queues, MaxEntries)
	case o.Rounds < 1 || o.Rounds > MaxRounds:
		return fmt.Errorf("rounds %d: want 1..%d", o.Rounds, MaxRounds)
	case o.Settle < 0:
		return fmt.Errorf("settle %v: negative", o.Settle)
	}
	return nil
}

// ModeResult is the median measurement of one mode. Times are in
// milliseconds; the user times exclude the time spent inside the ioctls.
type ModeResult struct {
	Mode          string  `json:"mode"`
	EnableMS      float64 `json:"enable_ms"`
	DisableMS     float64 `json:"disable_ms"`
	EnableUserMS  float64 `json:"enable_user_ms"`
	DisableUserMS float64 `json:"disable_user_ms"`
	// Ioctls is the number of KVM_IOEVENTFD calls of one round (enable and
	// disable): 2 x entries in every mode.
	Ioctls int `json:"ioctls"`
}

// Result is what Run measured.
type Result struct {
	Devices int          `json:"devices"`
	Queues  int          `json:"queues"`
	Entries int          `json:"entries"`
	Rounds  int          `json:"rounds"`
	Modes   []ModeResult `json:"modes"`
}

// Mode returns the result of the named mode.
func (r *Result) Mode(name string) (ModeResult, bool) {
	for _, m := range r.Modes {
		if m.Mode == name {
			return m, true
		}
	}
	return ModeResult{}, false
}

// WriteTable prints r as a table: per mode the enable and disable times,
// the ioctl count, the userspace times and the ratio of each time to raw.
func (r *Result) WriteTable(w io.Writer) error {
	raw, hasRaw := r.Mode(ModeRaw)
	ratio := func(v, base float64) string {
		if !hasRaw || base <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", v/base)
	}
	if _, err := fmt.Fprintf(w, "%d devices x %d queues = %d ioeventfds, median of %d rounds\n\n", r.Devices, r.Queues, r.Entries, r.Rounds); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "%-16s %10s %11s %7s %25s %23s\n", "mode", "enable ms", "disable ms", "ioctls", "user ms (enable/disable)", "vs raw (enable/disable)"); err != nil {
		return err
	}
	for _, m := range r.Modes {
		user := fmt.Sprintf("%.3f / %.3f", m.EnableUserMS, m.DisableUserMS)
		vs := ratio(m.EnableMS, raw.EnableMS) + " / " + ratio(m.DisableMS, raw.DisableMS)
		if _, err := fmt.Fprintf(w, "%-16s %10.3f %11.3f %7d %25s %23s\n", m.Mode, m.EnableMS, m.DisableMS, m.Ioctls, user, vs); err != nil {
			return err
		}
	}
	return nil
}

// timedAssigner passes calls through to the VM and adds up the time spent
// inside them. Clock reads are monotonic-only (time.Since a base), one per
// side of each call.
type timedAssigner struct {
	k     kvm.IoeventfdAssigner
	base  time.Time
	calls int
	in    time.Duration
}

func (t *timedAssigner) AssignIoeventfd(e kvm.Ioeventfd) error {
	a := time.Since(t.base)
	err := t.k.AssignIoeventfd(e)
	t.in += time.Since(t.base) - a
	t.calls++
	return err
}

func (t *timedAssigner) DeassignIoeventfd(e kvm.Ioeventfd) error {
	a := time.Since(t.base)
	err := t.k.DeassignIoeventfd(e)
	t.in += time.Since(t.base) - a
	t.calls++
	return err
}

// sample is one round's measurement of one mode.
type sample struct {
	enable, disable, enableUser, disableUser time.Duration
	ioctls                                   int
}

// Run measures every mode Rounds times on a fresh VM (no memory, no vCPU:
// KVM_IOEVENTFD needs neither), interleaving the modes within each round so
// that drift affects them alike, and returns the medians. It stops early
// with ctx's error when ctx is done.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("notifier bench: %w", err)
	}
	path := o.KVMPath
	if path == "" {
		path = kvm.DevicePath
	}
	n := o.Devices * o.Queues
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n)+64 {
		return nil, fmt.Errorf("notifier bench: %d ioeventfds need as many eventfds, but RLIMIT_NOFILE is %d", n, lim.Cur)
	}

	sys, err := kvm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("notifier bench: %w", err)
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return nil, fmt.Errorf("notifier bench: %w", err)
	}
	// Closing the VM drops every registration, whatever state an error
	// left behind.
	defer vm.Close()

	entries := make([]kvm.Ioeventfd, 0, n)
	defer func() {
		for _, e := range entries {
			e.Event.Close()
		}
	}()
	for d := range o.Devices {
		for q := range o.Queues {
			ev, err := kvm.NewEventFD()
			if err != nil {
				return nil, fmt.Errorf("notifier bench: %w", err)
			}
			entries = append(entries, kvm.Ioeventfd{
				Space: kvm.SpaceMMIO, Addr: MMIOBase + uint64(d)*MMIOStride + QueueNotifyOffset,
				Len: 4, HasDatamatch: true, Datamatch: uint64(q), Event: ev,
			})
		}
	}

	b := &bench{vm: vm, entries: entries, queues: o.Queues, settle: o.Settle}
	samples := make(map[string][]sample)
	for round := range o.Rounds {
		for _, mode := range Modes() {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("notifier bench: %w", err)
			}
			s, err := b.measure(ctx, mode)
			if err != nil {
				return nil, fmt.Errorf("notifier bench: round %d, mode %s: %w", round+1, mode, err)
			}
			samples[mode] = append(samples[mode], s)
		}
	}

	r := &Result{Devices: o.Devices, Queues: o.Queues, Entries: n, Rounds: o.Rounds}
	for _, mode := range Modes() {
		ss := samples[mode]
		r.Modes = append(r.Modes, ModeResult{
			Mode:          mode,
			EnableMS:      medianMS(ss, func(s sample) time.Duration { return s.enable }),
			DisableMS:     medianMS(ss, func(s sample) time.Duration { return s.disable }),
			EnableUserMS:  medianMS(ss, func(s sample) time.Duration { return s.enableUser }),
			DisableUserMS: medianMS(ss, func(s sample) time.Duration { return s.disableUser }),
			Ioctls:        ss[0].ioctls,
		})
	}
	return r, nil
}

// medianMS returns the median of one field of ss in milliseconds, rounded
// to 0.1 us.
func medianMS(ss []sample, field func(sample) time.Duration) float64 {
	ds := make([]time.Duration, len(ss))
	for i, s := range ss {
		ds[i] = field(s)
	}
	slices.Sort(ds)
	m := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		m = (ds[len(ds)/2-1] + m) / 2
	}
	return math.Round(float64(m.Nanoseconds())/100) / 1e4
}

type bench struct {
	vm      *kvm.VM
	entries []kvm.Ioeventfd
	queues  int
	settle  time.Duration
}

// measure enables then disables every entry in the given mode.
func (b *bench) measure(ctx context.Context, mode string) (sample, error) {
	t := &timedAssigner{k: b.vm, base: time.Now()}
	var enable, disable func() error
	switch mode {
	case ModeRaw:
		enable = func() error {
			for _, e := range b.entries {
				if err := t.AssignIoeventfd(e); err != nil {
					return err
				}
			}
			return nil
		}
		disable = func() error {
			for _, e := range b.entries {
				if err := t.DeassignIoeventfd(e); err != nil {
					return err
				}
			}
			return nil
		}
	case ModeBatchedDevice, ModeBatchedAll, ModePerQueue:
		s := kvm.NewIoEventSpace(t)
		ids := make([]kvm.IoEventID, len(b.entries))
		// group is the number of entries per transaction; 1 means no
		// transaction at all (each Add and Remove commits itself).
		group := map[string]int{ModeBatchedDevice: b.queues, ModeBatchedAll: len(b.entries), ModePerQueue: 1}[mode]
		// run stages entry i's change with op, in a transaction of group
		// entries (or, for group 1, in the space's own one per change).
		run := func(n int, op func(st ioStager, i int) error) error {
			var tx kvm.IoEventTxn
			for i := range n {
				var st ioStager = s
				if group > 1 {
					if i%group == 0 {
						tx = s.Begin()
					}
					st = tx
				}
				if err := op(st, i); err != nil {
					if tx != nil {
						tx.Abort()
					}
					return err
				}
				if group > 1 && (i+1)%group == 0 {
					err := tx.Commit()
					tx = nil
					if err != nil {
						return err
					}
				}
			}
			if tx != nil {
				return tx.Commit()
			}
			return nil
		}
		enable = func() error {
			err := run(len(b.entries), func(st ioStager, i int) error {
				id, err := st.Add(b.entries[i])
				ids[i] = id
				return err
			})
			if err != nil {
				return err
			}
			if s.Len() != len(b.entries) {
				return fmt.Errorf("%d entries committed, want %d", s.Len(), len(b.entries))
			}
			return nil
		}
		disable = func() error {
			if err := run(len(ids), func(st ioStager, i int) error { return st.Remove(ids[i]) }); err != nil {
				return err
			}
			if s.Len() != 0 {
				return fmt.Errorf("%d entries still committed after disabling", s.Len())
			}
			return nil
		}
	default:
		return sample{}, fmt.Errorf("unknown mode %q", mode)
	}

	var out sample
	for _, phase := range []struct {
		f           func() error
		total, user *time.Duration
	}{{enable, &out.enable, &out.enableUser}, {disable, &out.disable, &out.disableUser}} {
		if err := b.pause(ctx); err != nil {
			return sample{}, err
		}
		in := t.in
		start := time.Now()
		err := phase.f()
		*phase.total = time.Since(start)
		*phase.user = *phase.total - (t.in - in)
		if err != nil {
			return sample{}, err
		}
	}
	out.ioctls = t.calls
	if want := 2 * len(b.entries); out.ioctls != want {
		return sample{}, fmt.Errorf("%d ioctls, want %d", out.ioctls, want)
	}
	return out, nil
}

// pause collects garbage and waits Settle before a measured phase.
func (b *bench) pause(ctx context.Context) error {
	runtime.GC()
	if b.settle <= 0 {
		return nil
	}
	tm := time.NewTimer(b.settle)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// ioStager stages ioeventfd changes: an open kvm.IoEventTxn, or the
// kvm.IoEventSpace itself (each change its own transaction).
type ioStager interface {
	Add(e kvm.Ioeventfd) (kvm.IoEventID, error)
	Remove(id kvm.IoEventID) error
}
