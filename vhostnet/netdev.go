package vhostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
)

// NetConfig configures a vhost-backed virtio-net device.
type NetConfig struct {
	// Connector reaches the backend (UserClient, UserServer,
	// KernelConnector). The device owns it and closes it.
	Connector Connector
	// Attacher registers the device's queue notifiers; devices of one VM
	// share one so that devices starting together share a commit.
	Attacher *Attacher
	// MAC is the guest's address; nil generates a locally administered one.
	MAC net.HardwareAddr
	// QueuePairs is the number of RX/TX pairs wanted (default 1); the
	// device offers fewer if the backend serves fewer.
	QueuePairs int
	// QueueSize is the largest queue size offered (default
	// DefaultQueueSize; a power of two).
	QueueSize uint16
	// Memory is guest RAM as shared with the backend (SharedRegion).
	Memory []MemoryRegion
	// Call is the eventfd the backend signals when it used buffers: an
	// irqfd on the device's interrupt line, so used-buffer interrupts go
	// from the backend to the guest without the VMM (pair it with
	// virtio.MMIOConfig.UsedBufferAlways). The caller owns it.
	Call *kvm.EventFD
	// ConnectTimeout bounds the first connection to the backend (0: 10 s).
	ConnectTimeout time.Duration
	// Logger receives connection events and errors. nil: discard.
	Logger *slog.Logger
}

// NetStats are a device's cumulative counters.
type NetStats struct {
	// Notifiers is the number of queue notifiers of the device's last
	// attach.
	Notifiers int
	// Attaches and Detaches count the operations that did something.
	Attaches, Detaches int
	// AttachCommits and DetachCommits count the ioeventfd commits that
	// carried the device's notifiers.
	AttachCommits, DetachCommits int
	// AttachTime and DetachTime are the total times of those operations
	// (notifier and backend phases).
	AttachTime, DetachTime time.Duration
	// AttachFailures counts failed (unwound) attaches.
	AttachFailures int
	// Disconnects and Reconnects count backend hang-ups and new
	// connections after one.
	Disconnects, Reconnects int
}

// String formats s as govmm run --stats prints it (after "netN: ").
func (s NetStats) String() string {
	return fmt.Sprintf("notifiers=%d attach_commits=%d attach_ms=%.1f detach_commits=%d detach_ms=%.1f",
		s.Notifiers, s.AttachCommits, ms(s.AttachTime), s.DetachCommits, ms(s.DetachTime))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ring is a data queue's configuration, copied at activation so that the
// device never reads the transport's Queue outside Activate.
type ring struct {
	size              uint16
	desc, avail, used uint64
}

// activation is the state of one DRIVER_OK..reset period.
type activation struct {
	mem      *virtio.GuestMemory
	features uint64
	rings    map[int]ring // ready data queues
	notify   []virtio.NotifySpec
	irq      virtio.Interrupt
	fail     func(error)
	bases    map[int]uint16 // next available index per queue, for restarts
	pairs    int            // pairs the driver enabled (MQ), 1 otherwise
}

// running is what a started backend needs to be stopped.
type running struct {
	act    *activation
	queues []int
	full   bool // every queue was handed over (start completed)
}

// NetDevice is a virtio-net device (virtio.Device) whose data queues are
// served by a vhost backend; the VMM keeps the configuration space and
// the control queue. Its queue notifiers are registered by the Attacher
// (the transport must use ExternalNotifiers) and its used-buffer
// interrupts go straight from the backend to KVM through Call (the
// transport must use UsedBufferAlways).
//
// When a vhost-user backend hangs up, the device stops its queues (the
// vring bases it cannot ask for are read from the used rings) and
// deregisters their notifiers; guest kicks then exit to the VMM and are
// ignored. When a backend connects again, the device renegotiates and
// restarts every queue at its saved base, without the guest noticing
// anything but a pause.
type NetDevice struct {
	cfg     NetConfig
	log     *slog.Logger
	att     *Attacher
	conn    Connector
	pairs   int
	offered uint64
	config  [netCfgSize]byte
	proto   vhostuser.ProtocolFeatures // wanted of every connection

	mu      sync.Mutex
	backend Backend
	bFeat   uint64 // GET_FEATURES of the current connection
	bProto  vhostuser.ProtocolFeatures
	// beEnabled is each queue's SET_VRING_ENABLE state in the current
	// connection's backend (absent: disabled, the initial state).
	beEnabled map[int]bool
	act       *activation
	run       *running
	stats     NetStats
	closed    bool
	kicks     atomic.Pointer[[]*kvm.EventFD] // per queue index, while attached
	ctrl      *ctrlWorker                    // touched only by Activate/Reset/Close
	ctrlIdle  chan<- struct{}                // tests: see ctrlWorker.idle
	ctrlIdx   int
	cancel    context.CancelFunc
	supDone   chan struct{}
}

var (
	_ virtio.Device        = (*NetDevice)(nil)
	_ virtio.QueueNotifier = (*NetDevice)(nil)
	_ unit                 = (*NetDevice)(nil)
)

// NewNetDevice connects to the backend, negotiates, and returns the device.
// The device offers the guest the data-path features the backend offers
// (it must offer VERSION_1), plus MAC, STATUS, CTRL_VQ and, with more than
// one pair, MQ.
func NewNetDevice(cfg NetConfig) (*NetDevice, error) {
	return NewNetDeviceContext(context.Background(), cfg)
}

// NewNetDeviceContext is NewNetDevice whose first connection to the
// backend also ends when ctx does (a user's ^C while govmm waits for a
// backend to connect).
func NewNetDeviceContext(ctx context.Context, cfg NetConfig) (*NetDevice, error) {
	if cfg.Connector == nil || cfg.Attacher == nil {
		return nil, errors.New("vhost net device: needs a connector and an attacher")
	}
	if cfg.QueuePairs == 0 {
		cfg.QueuePairs = 1
	}
	if cfg.QueuePairs < 1 || 2*cfg.QueuePairs+1 > virtio.MMIOMaxQueues || 2*cfg.QueuePairs > vhostuser.MaxVringIndex+1 {
		cfg.Connector.Close()
		return nil, fmt.Errorf("vhost net device: %d queue pairs out of range", cfg.QueuePairs)
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if s := cfg.QueueSize; s&(s-1) != 0 || s > virtio.QueueSizeMax {
		cfg.Connector.Close()
		return nil, fmt.Errorf("vhost net device: queue size %d is not a power of two up to %d", s, virtio.QueueSizeMax)
	}
	if cfg.Call == nil || len(cfg.Memory) == 0 {
		cfg.Connector.Close()
		return nil, errors.New("vhost net device: needs a call eventfd and guest memory")
	}
	if cfg.MAC == nil {
		mac, err := virtio.RandomMAC()
		if err != nil {
			cfg.Connector.Close()
			return nil, fmt.Errorf("vhost net device: %w", err)
		}
		cfg.MAC = mac
	}
	if len(cfg.MAC) != 6 {
		cfg.Connector.Close()
		return nil, fmt.Errorf("vhost net device: MAC %v is not 6 bytes", cfg.MAC)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	d := &NetDevice{cfg: cfg, log: cfg.Logger, att: cfg.Attacher, conn: cfg.Connector, proto: vhostuser.ProtocolMQ | vhostuser.ProtocolReplyAck}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("backend", d.conn.String())

	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	b, err := d.connectFirst(ctx)
	cancel()
	if err != nil {
		d.conn.Close()
		return nil, fmt.Errorf("vhost net device: %w", err)
	}
	feat, proto, pairs, err := d.handshake(b)
	if err != nil {
		b.Close()
		d.conn.Close()
		return nil, fmt.Errorf("vhost net device: %s: %w", d.conn, err)
	}
	if feat&virtio.FeatureVersion1 == 0 {
		b.Close()
		d.conn.Close()
		return nil, fmt.Errorf("vhost net device: %s does not offer VIRTIO_F_VERSION_1 (features %#x)", d.conn, feat)
	}
	d.pairs = min(cfg.QueuePairs, pairs)
	if d.pairs < cfg.QueuePairs {
		d.log.Warn("backend serves fewer queue pairs than asked for", "asked", cfg.QueuePairs, "backend", pairs)
	}
	d.offered = feat&backendFeatures | vmmFeatures
	if d.pairs > 1 {
		d.offered |= netFMQ
	}
	copy(d.config[netCfgMAC:], cfg.MAC)
	d.config[netCfgStatus] = netStatusLinkUp
	d.config[netCfgMaxPairs] = byte(d.pairs)
	d.config[netCfgMaxPairs+1] = byte(d.pairs >> 8)
	d.ctrlIdx = 2 * d.pairs
	d.backend, d.bFeat, d.bProto = b, feat, proto
	d.beEnabled = map[int]bool{}

	sctx, scancel := context.WithCancel(context.Background())
	d.cancel, d.supDone = scancel, make(chan struct{})
	go d.supervise(sctx, b)
	return d, nil
}

// connectFirst connects, retrying (a backend started just before the VMM
// may not be listening yet) until ctx ends.
func (d *NetDevice) connectFirst(ctx context.Context) (Backend, error) {
	delay := 10 * time.Millisecond
	for {
		b, err := d.conn.Connect(ctx)
		if err == nil || !d.conn.Reconnects() {
			return b, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// handshake runs the connection-time negotiation: GET_FEATURES, the
// protocol features both sides have (vhost-user), the queue pair count,
// and SET_OWNER.
func (d *NetDevice) handshake(b Backend) (uint64, vhostuser.ProtocolFeatures, int, error) {
	feat, err := b.GetFeatures()
	if err != nil {
		return 0, 0, 0, err
	}
	var proto vhostuser.ProtocolFeatures
	if feat&VhostFProtocolFeatures != 0 {
		offered, err := b.GetProtocolFeatures()
		if err != nil {
			return 0, 0, 0, err
		}
		proto = offered & d.proto & vhostuser.SupportedProtocolFeatures
		if err := b.SetProtocolFeatures(proto); err != nil {
			return 0, 0, 0, err
		}
	}
	pairs, err := b.QueuePairs()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := b.SetOwner(); err != nil {
		return 0, 0, 0, err
	}
	return feat, proto, max(pairs, 1), nil
}

// QueuePairs returns the number of queue pairs the device offers.
func (d *NetDevice) QueuePairs() int { return d.pairs }

// MAC returns the device's MAC address.
func (d *NetDevice) MAC() net.HardwareAddr { return d.cfg.MAC }

// Stats returns a snapshot of the device's counters.
func (d *NetDevice) Stats() NetStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Connected reports whether a backend is connected now.
func (d *NetDevice) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.backend != nil
}

// Attached reports whether the backend runs the device's queues now.
func (d *NetDevice) Attached() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.run != nil && d.run.full
}

// DeviceID implements virtio.Device.
func (d *NetDevice) DeviceID() uint32 { return virtio.DeviceIDNet }

// Features implements virtio.Device.
func (d *NetDevice) Features() uint64 { return d.offered }

// QueueMaxSizes implements virtio.Device: the pairs' RX and TX queues,
// then the control queue.
func (d *NetDevice) QueueMaxSizes() []uint16 {
	s := make([]uint16, 2*d.pairs+1)
	for i := range 2 * d.pairs {
		s[i] = d.cfg.QueueSize
	}
	s[2*d.pairs] = ctrlQueueSize
	return s
}

// ReadConfig implements virtio.Device.
func (d *NetDevice) ReadConfig(offset uint64, data []byte) {
	for i := range data {
		o := offset + uint64(i)
		if o < uint64(len(d.config)) && o >= offset {
			data[i] = d.config[o]
		} else {
			data[i] = 0
		}
	}
}

// WriteConfig implements virtio.Device: nothing is writable.
func (d *NetDevice) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device: it starts the control queue worker
// and has the Attacher start the data queues (now, or at the end of the
// Attacher's Batch). With the backend disconnected, the queues start when
// it comes back.
func (d *NetDevice) Activate(a virtio.Activation) error {
	pairs := d.pairs
	if a.Features&netFMQ == 0 {
		pairs = 1
	}
	act := &activation{
		mem: a.Mem, features: a.Features, rings: map[int]ring{}, notify: a.Notify,
		irq: a.Interrupt, fail: a.Fail, bases: map[int]uint16{}, pairs: 1,
	}
	for q := 0; q < 2*pairs && q < len(a.Queues); q++ {
		if vq := a.Queues[q]; vq.Ready {
			act.rings[q] = ring{size: vq.Size, desc: vq.DescAddr, avail: vq.DriverAddr, used: vq.DeviceAddr}
		}
	}
	if len(act.rings) == 0 {
		return errors.New("vhost net device: no data queue is ready")
	}
	for q, r := range act.rings {
		if err := d.checkRing(r); err != nil {
			return fmt.Errorf("vhost net device: queue %d: %w", q, err)
		}
	}
	d.mu.Lock()
	d.act = act
	d.mu.Unlock()
	// The control queue follows the data queues the driver can use: 2N
	// with MQ, 2 without (virtio-net's queue numbering).
	d.ctrlIdx = 2 * pairs
	if a.Features&netFCtrlVQ != 0 && d.ctrlIdx < len(a.Queues) && a.Queues[d.ctrlIdx].Ready {
		d.ctrl = startCtrl(&ctrlWorker{
			q: a.Queues[d.ctrlIdx], features: a.Features, maxPairs: pairs,
			irq: a.Interrupt, fail: a.Fail, setPairs: d.setPairs, idle: d.ctrlIdle,
		})
	}
	err := d.att.start(d)
	if errors.Is(err, ErrDisconnected) {
		d.log.Warn("backend went away during start; waiting for it to come back", "err", err)
		return nil
	}
	return err
}

// checkRing verifies that the rings lie in memory shared with the backend.
func (d *NetDevice) checkRing(r ring) error {
	_, err := d.ringAddr(r)
	return err
}

func (d *NetDevice) ringAddr(r ring) (VringAddr, error) {
	t := Translator(d.cfg.Memory)
	n := uint64(r.size)
	desc, err := t.UserAddr(r.desc, 16*n)
	if err != nil {
		return VringAddr{}, fmt.Errorf("descriptor table: %w", err)
	}
	avail, err := t.UserAddr(r.avail, 6+2*n)
	if err != nil {
		return VringAddr{}, fmt.Errorf("available ring: %w", err)
	}
	used, err := t.UserAddr(r.used, 6+8*n)
	if err != nil {
		return VringAddr{}, fmt.Errorf("used ring: %w", err)
	}
	return VringAddr{Desc: desc, Avail: avail, Used: used}, nil
}

// Reset implements virtio.Device: the control worker stops, then the
// Attacher stops the backend's queues and removes their notifiers (inside
// an Attacher Batch: when the batch ends).
func (d *NetDevice) Reset() {
	if d.ctrl != nil {
		d.ctrl.stop()
		d.ctrl = nil
	}
	d.att.stop(d)
	d.mu.Lock()
	d.act = nil
	d.mu.Unlock()
}

// NotifyQueue implements virtio.QueueNotifier: control-queue kicks wake
// its worker; a data-queue kick that reached the VMM (it raced with the
// notifier's registration) is passed on to the backend's kick eventfd.
// Kicks that arrive while no backend runs are dropped: the queues are
// kicked once when they start.
func (d *NetDevice) NotifyQueue(q int) {
	if q == d.ctrlIdx {
		if w := d.ctrl; w != nil {
			w.notify()
		}
		return
	}
	if k := d.kicks.Load(); k != nil && q < len(*k) && (*k)[q] != nil {
		(*k)[q].Signal()
	}
}

// setPairs applies VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: pairs below n are
// enabled, the others disabled.
func (d *NetDevice) setPairs(n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.act == nil {
		return errors.New("device not active")
	}
	d.act.pairs = n
	if d.run == nil || !d.run.full || d.backend == nil {
		return nil // applied at the next start
	}
	if err := d.enableLocked(d.backend, d.run.queues); err != nil {
		if errors.Is(err, ErrDisconnected) {
			return nil // applied when the backend comes back
		}
		return err
	}
	return nil
}

// enableLocked makes the backend's queues enabled according to the active
// pairs. A vhost-user backend with protocol features starts every ring
// disabled and keeps a ring's state across stops, so only changes are
// sent (a fresh connection needs pair 0's two messages, not one per
// queue); one without protocol features enables every ring by itself.
// Kernel vhost-net binds or unbinds each pair's TAP queue every time (its
// GET_VRING_BASE unbinds).
func (d *NetDevice) enableLocked(b Backend, queues []int) error {
	_, kernel := b.(*KernelNet)
	if !kernel && d.bFeat&VhostFProtocolFeatures == 0 {
		return nil
	}
	for _, q := range queues {
		want := q/2 < d.act.pairs
		if !kernel && d.beEnabled[q] == want {
			continue
		}
		if err := b.SetVringEnable(uint32(q), want); err != nil {
			return fmt.Errorf("enable queue %d: %w", q, err)
		}
		d.beEnabled[q] = want
	}
	return nil
}

// plan implements unit.
func (d *NetDevice) plan() ([]virtio.NotifySpec, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.act == nil || d.backend == nil || d.run != nil {
		return nil, false
	}
	queues := sortedQueues(d.act.rings)
	specs := make([]virtio.NotifySpec, len(queues))
	for i, q := range queues {
		specs[i] = d.act.notify[q]
	}
	d.run = &running{act: d.act, queues: queues}
	return specs, true
}

func sortedQueues(m map[int]ring) []int {
	var qs []int
	maxQ := -1
	for q := range m {
		maxQ = max(maxQ, q)
	}
	for q := 0; q <= maxQ; q++ {
		if _, ok := m[q]; ok {
			qs = append(qs, q)
		}
	}
	return qs
}

// start implements unit: the vhost start sequence, QEMU's order.
func (d *NetDevice) start(kicks []*kvm.EventFD) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, b := d.run, d.backend
	if r == nil || b == nil {
		return fmt.Errorf("start: %w", ErrDisconnected)
	}
	act := r.act
	feat := act.features&backendFeatures | d.bFeat&VhostFProtocolFeatures
	if act.features&netFMQ != 0 && d.bFeat&netFMQ != 0 {
		feat |= netFMQ
	}
	if err := b.SetFeatures(feat); err != nil {
		return fmt.Errorf("set features %#x: %w", feat, err)
	}
	if err := b.SetMemTable(d.cfg.Memory); err != nil {
		return fmt.Errorf("set memory table: %w", err)
	}
	for i, q := range r.queues {
		rg := act.rings[q]
		addr, err := d.ringAddr(rg)
		if err != nil {
			return fmt.Errorf("queue %d: %w", q, err)
		}
		idx := uint32(q)
		if err := b.SetVringNum(idx, uint32(rg.size)); err != nil {
			return fmt.Errorf("queue %d size: %w", q, err)
		}
		if err := b.SetVringBase(idx, uint32(act.bases[q])); err != nil {
			return fmt.Errorf("queue %d base: %w", q, err)
		}
		if err := b.SetVringAddr(idx, addr); err != nil {
			return fmt.Errorf("queue %d addresses: %w", q, err)
		}
		if err := b.SetVringKick(idx, kicks[i]); err != nil {
			return fmt.Errorf("queue %d kick: %w", q, err)
		}
		if err := b.SetVringCall(idx, d.cfg.Call); err != nil {
			return fmt.Errorf("queue %d call: %w", q, err)
		}
	}
	if err := d.enableLocked(b, r.queues); err != nil {
		return err
	}
	perQueue := make([]*kvm.EventFD, len(act.notify))
	for i, q := range r.queues {
		perQueue[q] = kicks[i]
	}
	r.full = true
	d.kicks.Store(&perQueue)
	// Let the backend look at its rings once: buffers posted before
	// DRIVER_OK, and kicks that went nowhere while it was away.
	for _, k := range kicks {
		k.Signal()
	}
	return nil
}

// stop implements unit: GET_VRING_BASE on every queue handed over (it
// stops them); the bases are kept for a restart. A backend that cannot
// answer (gone) leaves the used index as the base: everything the guest
// has not seen completed is offered again.
func (d *NetDevice) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.run
	if r == nil {
		return
	}
	d.kicks.Store(nil)
	b := d.backend
	for _, q := range r.queues {
		var base uint32
		var err error
		if b != nil {
			base, err = b.GetVringBase(uint32(q))
		} else {
			err = ErrDisconnected
		}
		if err != nil {
			used, uerr := r.act.mem.LoadU16Acquire(r.act.rings[q].used + 2)
			if uerr != nil {
				continue
			}
			base = uint32(used)
			if b != nil && !errors.Is(err, ErrDisconnected) {
				d.log.Warn("GET_VRING_BASE failed; restarting from the used index", "queue", q, "err", err)
			}
		}
		if r.full {
			r.act.bases[q] = uint16(base)
		}
	}
}

// attached implements unit.
func (d *NetDevice) attached(res OpResult) {
	d.mu.Lock()
	if res.Skipped {
		d.mu.Unlock()
		return
	}
	d.stats.AttachCommits += res.Commits
	d.stats.AttachTime += res.Total()
	var fail func(error)
	if res.Err != nil {
		d.stats.AttachFailures++
		if d.run != nil {
			if !errors.Is(res.Err, ErrDisconnected) {
				fail = d.run.act.fail
			}
		}
		d.run = nil
	} else {
		d.stats.Attaches++
		d.stats.Notifiers = res.Notifiers
	}
	d.mu.Unlock()
	if fail != nil {
		fail(res.Err)
	}
}

// detached implements unit.
func (d *NetDevice) detached(res OpResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if res.Skipped {
		return
	}
	d.run = nil
	d.stats.Detaches++
	d.stats.DetachCommits += res.Commits
	d.stats.DetachTime += res.Total()
}

// supervise watches the backend connection: when it hangs up, the queues
// stop and the device reconnects (client: redial with backoff; server:
// wait for the next peer), renegotiates and restarts them.
func (d *NetDevice) supervise(ctx context.Context, b Backend) {
	defer close(d.supDone)
	for {
		if b == nil {
			b = d.reconnect(ctx)
			if b == nil {
				return
			}
			d.mu.Lock()
			need := d.act != nil
			d.stats.Reconnects++
			d.mu.Unlock()
			if need {
				if err := <-d.att.startSoon(d); err != nil {
					d.log.Warn("restart after reconnect failed", "err", err)
				}
			}
		}
		w, ok := b.(Watcher)
		if !ok {
			<-ctx.Done()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.Disconnected():
		}
		d.log.Warn("vhost backend disconnected; stopping the queues until it is back")
		<-d.att.stopSoon(d)
		d.mu.Lock()
		d.backend = nil
		d.stats.Disconnects++
		d.mu.Unlock()
		b.Close()
		b = nil
		if !d.conn.Reconnects() {
			return
		}
	}
}

// reconnect connects again, with backoff, until it succeeds with a backend
// compatible with what the guest negotiated, or ctx ends (nil).
func (d *NetDevice) reconnect(ctx context.Context) Backend {
	delay := 20 * time.Millisecond
	for {
		b, err := d.conn.Connect(ctx)
		if err == nil {
			var feat uint64
			var proto vhostuser.ProtocolFeatures
			var pairs int
			feat, proto, pairs, err = d.handshake(b)
			if err == nil {
				err = d.compatible(feat, pairs)
			}
			if err == nil {
				d.mu.Lock()
				if d.closed {
					d.mu.Unlock()
					b.Close()
					return nil
				}
				d.backend, d.bFeat, d.bProto = b, feat, proto
				d.beEnabled = map[int]bool{}
				d.beEnabled = map[int]bool{}
				d.mu.Unlock()
				d.log.Info("vhost backend reconnected")
				return b
			}
			b.Close()
			d.log.Warn("vhost backend reconnect: refused", "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// compatible checks that a new backend can carry what was offered.
func (d *NetDevice) compatible(feat uint64, pairs int) error {
	if missing := d.offered & backendFeatures &^ feat; missing != 0 {
		return fmt.Errorf("new backend lacks features %#x", missing)
	}
	if pairs < d.pairs {
		return fmt.Errorf("new backend serves %d queue pairs, the device has %d", pairs, d.pairs)
	}
	return nil
}

// Close stops watching the backend, stops the queues (if the transport
// has not reset the device already) and closes the backend and the
// connector. Idempotent.
func (d *NetDevice) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	<-d.supDone
	if d.ctrl != nil {
		d.ctrl.stop()
		d.ctrl = nil
	}
	d.att.stop(d)
	d.mu.Lock()
	b := d.backend
	d.backend = nil
	d.act = nil
	d.mu.Unlock()
	var errs []error
	if b != nil {
		errs = append(errs, b.Close())
	}
	errs = append(errs, d.conn.Close())
	return errors.Join(errs...)
}
