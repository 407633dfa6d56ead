package virtio

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/govmm/govmm/kvm"
)

// Virtio-net feature bits (as masks).
const (
	NetFCsum        uint64 = 1 << 0  // device handles packets with partial checksum (driver to device)
	NetFGuestCsum   uint64 = 1 << 1  // driver handles packets with partial checksum
	NetFMTU         uint64 = 1 << 3  // config mtu is valid
	NetFMAC         uint64 = 1 << 5  // config mac is valid
	NetFGuestTSO4   uint64 = 1 << 7  // driver accepts TSOv4 packets
	NetFGuestTSO6   uint64 = 1 << 8  // driver accepts TSOv6 packets
	NetFGuestECN    uint64 = 1 << 9  // driver accepts TSO with ECN
	NetFGuestUFO    uint64 = 1 << 10 // driver accepts UFO
	NetFHostTSO4    uint64 = 1 << 11 // device accepts TSOv4 packets
	NetFHostTSO6    uint64 = 1 << 12 // device accepts TSOv6 packets
	NetFHostECN     uint64 = 1 << 13 // device accepts TSO with ECN
	NetFHostUFO     uint64 = 1 << 14 // device accepts UFO
	NetFMrgRxbuf    uint64 = 1 << 15 // driver merges receive buffers
	NetFStatus      uint64 = 1 << 16 // config status is valid
	NetFCtrlVQ      uint64 = 1 << 17 // control queue
	NetFCtrlRX      uint64 = 1 << 18 // receive mode and MAC table commands
	NetFCtrlVLAN    uint64 = 1 << 19 // VLAN filtering
	NetFCtrlRXExtra uint64 = 1 << 20 // ALLUNI, NOMULTI, NOUNI, NOBCAST
	NetFGuestAnn    uint64 = 1 << 21 // driver announces itself
	NetFMQ          uint64 = 1 << 22 // several queue pairs
	NetFCtrlMACAddr uint64 = 1 << 23 // MAC_ADDR_SET
)

// netFeatureNeeds lists the features each feature requires (virtio 1.x,
// "Feature bit requirements" of the network device).
var netFeatureNeeds = []struct{ f, needs uint64 }{
	{NetFGuestTSO4, NetFGuestCsum},
	{NetFGuestTSO6, NetFGuestCsum},
	{NetFGuestUFO, NetFGuestCsum},
	{NetFHostTSO4, NetFCsum},
	{NetFHostTSO6, NetFCsum},
	{NetFHostUFO, NetFCsum},
	{NetFCtrlRX, NetFCtrlVQ},
	{NetFCtrlVLAN, NetFCtrlVQ},
	{NetFGuestAnn, NetFCtrlVQ},
	{NetFMQ, NetFCtrlVQ},
	{NetFCtrlMACAddr, NetFCtrlVQ},
	{NetFCtrlRXExtra, NetFCtrlRX},
}

// Net device limits and defaults.
const (
	// NetMaxQueuePairs is the most queue pairs a device offers.
	NetMaxQueuePairs = 32
	// NetQueueSize is the default (maximum) size of the data queues.
	NetQueueSize = 256
	// netCtrlQueueSize is the control queue's maximum size.
	netCtrlQueueSize = 64
	// netCtrlBudget is how many commands the control worker answers
	// before it looks for a stop request: a driver that keeps the queue
	// full cannot hold Reset off.
	netCtrlBudget = 64
	// netStatusLinkUp is VIRTIO_NET_S_LINK_UP.
	netStatusLinkUp = 1
	// Configuration space layout (struct virtio_net_config).
	netCfgMAC      = 0
	netCfgStatus   = 6
	netCfgMaxPairs = 8
	netCfgMTU      = 10
	netCfgSize     = 12
)

// NetOffloads is a set of offloads a backend can handle in both
// directions: it accepts packets with them (the driver's CSUM and
// HOST_TSO*) and can be told to produce them (the driver's GUEST_*; a TAP
// through TUNSETOFFLOAD).
type NetOffloads uint8

const (
	NetOffloadCsum NetOffloads = 1 << iota // partial checksums
	NetOffloadTSO4                         // TCP segmentation over IPv4 (needs Csum)
	NetOffloadTSO6                         // TCP segmentation over IPv6 (needs Csum)
)

// NetGuestOffloads returns the offloads a driver that negotiated
// features accepts in the packets it receives (GUEST_CSUM, and the
// GUEST_TSO* that need it): what the backend may be told to produce.
func NetGuestOffloads(features uint64) NetOffloads {
	var o NetOffloads
	if features&NetFGuestCsum != 0 {
		o |= NetOffloadCsum
		if features&NetFGuestTSO4 != 0 {
			o |= NetOffloadTSO4
		}
		if features&NetFGuestTSO6 != 0 {
			o |= NetOffloadTSO6
		}
	}
	return o
}

// RandomMAC returns a random locally administered unicast address, for a
// device whose MAC the user did not choose.
func RandomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random MAC: %w", err)
	}
	mac[0] = mac[0]&^1 | 2
	return mac, nil
}

// NetBackend is the host side of a virtio-net device: one pollable packet
// endpoint per queue pair and device-wide controls. vhostnet.TAPBackend
// adapts a *tap.Device to it.
type NetBackend interface {
	// Pair returns queue pair i's endpoint (0 <= i < QueuePairs).
	Pair(i int) PollablePacketIO
	// SetOffloads tells the backend which offloads packets it hands the
	// device may use (the negotiated guest offloads).
	SetOffloads(o NetOffloads) error
	// EnablePair attaches or detaches pair i's endpoint, so the host
	// only sends packets to the pairs the driver uses.
	EnablePair(i int, on bool) error
}

// NetDeviceConfig configures a virtio-net device.
type NetDeviceConfig struct {
	// MAC is the device's address (offered as VIRTIO_NET_F_MAC); nil:
	// the driver picks one.
	MAC net.HardwareAddr
	// MTU, if not 0, is offered as VIRTIO_NET_F_MTU (at least 68).
	MTU int
	// QueuePairs is the number of RX/TX pairs, 1..NetMaxQueuePairs; more
	// than one offers VIRTIO_NET_F_MQ.
	QueuePairs int
	// QueueSize is the data queues' maximum size (a power of two);
	// 0 means NetQueueSize.
	QueueSize uint16
	// Offloads the backend supports; each is offered in both directions.
	Offloads NetOffloads
	// Backend moves the packets. Required.
	Backend NetBackend
	// Logger receives device diagnostics. nil: discard.
	Logger *slog.Logger
}

// Net is a virtio-net device model (virtio.Device) with MQ, a control
// queue, mergeable receive buffers, checksum/TSO offloads and EVENT_IDX.
// At activation it runs one NetPairWorker per active queue pair and one
// goroutine for the control queue; the transport's Reset stops them all.
//
// Pair 0 is active from DRIVER_OK; with MQ the driver enables more with
// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, and the device detaches the endpoints
// of inactive pairs (EnablePair) so the host steers nothing to them.
type Net struct {
	cfg     NetDeviceConfig
	log     *slog.Logger
	offered uint64
	sizes   []uint16

	mu      sync.Mutex
	mac     [6]byte // current (MAC_ADDR_SET changes it until reset)
	run     *netRun
	retired []NetPairStats // per pair, from earlier activations
	ctrlOK  uint64
	ctrlErr uint64
}

var (
	_ Device        = (*Net)(nil)
	_ QueueNotifier = (*Net)(nil)
)

// NewNet returns a virtio-net device.
func NewNet(cfg NetDeviceConfig) (*Net, error) {
	switch {
	case cfg.Backend == nil:
		return nil, errors.New("new virtio-net device: no backend")
	case cfg.QueuePairs < 1 || cfg.QueuePairs > NetMaxQueuePairs:
		return nil, fmt.Errorf("new virtio-net device: %d queue pairs, want 1 to %d", cfg.QueuePairs, NetMaxQueuePairs)
	case cfg.MAC != nil && len(cfg.MAC) != 6:
		return nil, fmt.Errorf("new virtio-net device: MAC %v is not 6 bytes", cfg.MAC)
	case cfg.MTU != 0 && (cfg.MTU < 68 || cfg.MTU > 65535):
		return nil, fmt.Errorf("new virtio-net device: MTU %d out of range 68..65535", cfg.MTU)
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = NetQueueSize
	}
	if s := cfg.QueueSize; s&(s-1) != 0 || s > QueueSizeMax {
		return nil, fmt.Errorf("new virtio-net device: queue size %d is not a power of two up to %d", s, QueueSizeMax)
	}
	n := &Net{cfg: cfg, log: cfg.Logger, retired: make([]NetPairStats, cfg.QueuePairs)}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	copy(n.mac[:], cfg.MAC)
	n.offered = FeatureVersion1 | FeatureRingEventIdx | FeatureRingIndirectDesc |
		NetFStatus | NetFMrgRxbuf | NetFCtrlVQ | NetFCtrlRX | NetFCtrlRXExtra | NetFCtrlMACAddr
	if cfg.MAC != nil {
		n.offered |= NetFMAC
	}
	if cfg.MTU != 0 {
		n.offered |= NetFMTU
	}
	if cfg.QueuePairs > 1 {
		n.offered |= NetFMQ
	}
	if cfg.Offloads&NetOffloadCsum != 0 {
		n.offered |= NetFCsum | NetFGuestCsum
		if cfg.Offloads&NetOffloadTSO4 != 0 {
			n.offered |= NetFHostTSO4 | NetFGuestTSO4
		}
		if cfg.Offloads&NetOffloadTSO6 != 0 {
			n.offered |= NetFHostTSO6 | NetFGuestTSO6
		}
	}
	for i := 0; i < cfg.QueuePairs; i++ {
		n.sizes = append(n.sizes, cfg.QueueSize, cfg.QueueSize)
	}
	n.sizes = append(n.sizes, netCtrlQueueSize)
	return n, nil
}

// DeviceID implements Device.
func (n *Net) DeviceID() uint32 { return DeviceIDNet }

// Features implements Device.
func (n *Net) Features() uint64 { return n.offered }

// QueueMaxSizes implements Device: the RX/TX queues of every pair, then
// the control queue (index 2*QueuePairs).
func (n *Net) QueueMaxSizes() []uint16 { return append([]uint16(nil), n.sizes...) }

// MAC returns the device's current MAC address (the configured one, or
// what the driver set with MAC_ADDR_SET since the last reset).
func (n *Net) MAC() net.HardwareAddr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append(net.HardwareAddr(nil), n.mac[:]...)
}

// ReadConfig implements Device: mac, status (link up),
// max_virtqueue_pairs, mtu; 0 beyond.
func (n *Net) ReadConfig(offset uint64, data []byte) {
	var cfg [netCfgSize]byte
	n.mu.Lock()
	copy(cfg[netCfgMAC:], n.mac[:])
	n.mu.Unlock()
	binary.LittleEndian.PutUint16(cfg[netCfgStatus:], netStatusLinkUp)
	binary.LittleEndian.PutUint16(cfg[netCfgMaxPairs:], uint16(n.cfg.QueuePairs))
	binary.LittleEndian.PutUint16(cfg[netCfgMTU:], uint16(n.cfg.MTU))
	clear(data)
	if offset < netCfgSize {
		copy(data, cfg[offset:])
	}
}

// WriteConfig implements Device: the configuration space is read-only
// for a virtio 1.x driver (the MAC changes through the control queue).
func (n *Net) WriteConfig(uint64, []byte) {}

// checkNetFeatures refuses feature sets that break the specification's
// dependencies.
func checkNetFeatures(f uint64) error {
	var missing []string
	for _, d := range netFeatureNeeds {
		if f&d.f != 0 && f&d.needs == 0 {
			missing = append(missing, fmt.Sprintf("%#x without %#x", d.f, d.needs))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("virtio-net features %#x: %s", f, strings.Join(missing, ", "))
	}
	return nil
}

// netRun is one activation: the pairs, their workers and the control
// queue's goroutine.
type netRun struct {
	n        *Net
	a        Activation
	pairs    []*NetQueuePair // nil: the pair's queues are not ready
	kicks    [][2]*kvm.EventFD
	own      []*kvm.EventFD // per queue, created here for MMIO-exit kicks
	workers  []*NetPairWorker
	ready    int // pairs 0..ready-1 are usable
	active   atomic.Int32
	filter   atomic.Pointer[netRxFilter]
	ctrlQ    *Queue
	ctrlKick *kvm.EventFD
	ctrl     *netCtrlWorker
}

// Activate implements Device.
func (n *Net) Activate(a Activation) (err error) {
	f := a.Features
	if err := checkNetFeatures(f); err != nil {
		return err
	}
	if len(a.Queues) != len(n.sizes) {
		return fmt.Errorf("virtio-net: %d queues, want %d", len(a.Queues), len(n.sizes))
	}
	if err := n.cfg.Backend.SetOffloads(NetGuestOffloads(f)); err != nil {
		return fmt.Errorf("virtio-net offloads: %w", err)
	}

	n.mu.Lock()
	mac := n.mac
	n.mu.Unlock()
	r := &netRun{n: n, a: a, own: make([]*kvm.EventFD, len(a.Queues))}
	r.filter.Store(defaultRxFilter(mac))
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	kick := func(q int) (*kvm.EventFD, error) {
		if q < len(a.Kicks) && a.Kicks[q] != nil {
			return a.Kicks[q], nil
		}
		ev, err := kvm.NewEventFD()
		if err != nil {
			return nil, fmt.Errorf("virtio-net queue %d notifier: %w", q, err)
		}
		r.own[q] = ev
		return ev, nil
	}
	accept := func(frame []byte) bool { return r.filter.Load().accept(frame) }
	// Without MQ there is one pair, and queue 2 is the control queue.
	pairs := 1
	if f&NetFMQ != 0 {
		pairs = n.cfg.QueuePairs
	}
	counting := true
	for i := 0; i < n.cfg.QueuePairs; i++ {
		rxq, txq := a.Queues[2*i], a.Queues[2*i+1]
		if i >= pairs || !rxq.Ready || !txq.Ready {
			counting = false
			r.pairs = append(r.pairs, nil)
			r.kicks = append(r.kicks, [2]*kvm.EventFD{})
			continue
		}
		p, err := NewNetQueuePair(NetQueuePairConfig{
			Index: i, RX: rxq, TX: txq, IO: n.cfg.Backend.Pair(i),
			Features: f, Interrupt: a.Interrupt, Accept: accept,
		})
		if err != nil {
			return err
		}
		rk, err := kick(2 * i)
		if err != nil {
			return err
		}
		tk, err := kick(2*i + 1)
		if err != nil {
			return err
		}
		r.pairs = append(r.pairs, p)
		r.kicks = append(r.kicks, [2]*kvm.EventFD{rk, tk})
		if counting {
			r.ready = i + 1
		}
	}
	r.workers = make([]*NetPairWorker, len(r.pairs))
	if err := r.setActive(1); err != nil {
		return err
	}
	if f&NetFCtrlVQ != 0 {
		ci := 2
		if f&NetFMQ != 0 {
			ci = 2 * n.cfg.QueuePairs
		}
		if q := a.Queues[ci]; q.Ready {
			r.ctrlQ = q
			if r.ctrlKick, err = kick(ci); err != nil {
				return err
			}
			if r.ctrl, err = startNetCtrlWorker(r); err != nil {
				return err
			}
		}
	}
	n.mu.Lock()
	n.run = r
	n.mu.Unlock()
	return nil
}

// setActive makes pairs 0..k-1 active (attached, with a worker) and the
// others inactive. Pairs whose queues are not ready are skipped.
func (r *netRun) setActive(k int) error {
	be := r.n.cfg.Backend
	var errs []error
	for i, p := range r.pairs {
		want := i < k && p != nil
		switch w := r.workers[i]; {
		case want && w == nil:
			if err := be.EnablePair(i, true); err != nil {
				errs = append(errs, err)
				continue
			}
			w, err := StartNetPairWorker(NetPairWorkerConfig{
				Pair: p, RXKick: r.kicks[i][0], TXKick: r.kicks[i][1],
				OnError: r.a.Fail, Logger: r.n.log,
			})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			r.workers[i] = w
		case !want && w != nil:
			w.Stop()
			r.workers[i] = nil
			if err := be.EnablePair(i, false); err != nil {
				errs = append(errs, err)
			}
		case !want && w == nil && i > 0:
			// Never started (or not ready): make sure the host does
			// not queue packets nobody reads. Pair 0 always stays.
			if err := be.EnablePair(i, false); err != nil {
				errs = append(errs, err)
			}
		}
	}
	r.active.Store(int32(min(k, r.ready)))
	if len(errs) > 0 {
		return fmt.Errorf("virtio-net: set %d active queue pairs: %w", k, errors.Join(errs...))
	}
	return nil
}

// stop ends every goroutine of the run and releases what it created.
func (r *netRun) stop() {
	if r.ctrl != nil {
		r.ctrl.stop()
		r.ctrl = nil
	}
	for i, w := range r.workers {
		if w != nil {
			w.Stop()
			r.workers[i] = nil
		}
	}
	for i, ev := range r.own {
		if ev != nil {
			ev.Close()
			r.own[i] = nil
		}
	}
}

// Reset implements Device: stop the workers, keep their statistics, and
// return the MAC to its configured value.
func (n *Net) Reset() {
	n.mu.Lock()
	r := n.run
	n.run = nil
	n.mu.Unlock()
	if r != nil {
		r.stop()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if r != nil {
		for i, p := range r.pairs {
			if p != nil {
				n.retired[i] = n.retired[i].Add(p.Stats())
			}
		}
	}
	copy(n.mac[:], n.cfg.MAC)
}

// NotifyQueue implements QueueNotifier: a QueueNotify write that exited
// to the VMM (no ioeventfd) wakes the queue's worker through the
// eventfd the device created for it.
func (n *Net) NotifyQueue(q int) {
	n.mu.Lock()
	r := n.run
	n.mu.Unlock()
	if r == nil || q < 0 || q >= len(r.own) || r.own[q] == nil {
		return
	}
	if err := r.own[q].Signal(); err != nil {
		n.log.Warn("virtio-net kick", "queue", q, "err", err)
	}
}

// NetStats is a device's statistics, totals since it was created.
type NetStats struct {
	// Pairs has one entry per queue pair.
	Pairs []NetPairStats
	// ActivePairs is the number of pairs in use now (0 when the device
	// is not active).
	ActivePairs int
	// CtrlOK and CtrlErr count control commands acknowledged with OK and
	// with ERR.
	CtrlOK, CtrlErr uint64
}

// Total adds up the pairs.
func (s NetStats) Total() NetPairStats {
	var t NetPairStats
	for _, p := range s.Pairs {
		t = t.Add(p)
	}
	return t
}

// Stats returns the device's statistics. Safe from any goroutine.
func (n *Net) Stats() NetStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := NetStats{Pairs: append([]NetPairStats(nil), n.retired...), CtrlOK: n.ctrlOK, CtrlErr: n.ctrlErr}
	if r := n.run; r != nil {
		s.ActivePairs = int(r.active.Load())
		for i, p := range r.pairs {
			if p != nil {
				s.Pairs[i] = s.Pairs[i].Add(p.Stats())
			}
		}
	}
	return s
}

// netCtrlWorker serves the control queue on its own goroutine.
type netCtrlWorker struct {
	r     *netRun
	ep    *epollSet
	stopE *kvm.EventFD
	done  chan struct{}
	chain Chain
	buf   []byte
}

func startNetCtrlWorker(r *netRun) (_ *netCtrlWorker, err error) {
	w := &netCtrlWorker{r: r, done: make(chan struct{})}
	if w.stopE, err = kvm.NewEventFD(); err != nil {
		return nil, fmt.Errorf("virtio-net control queue: %w", err)
	}
	if w.ep, err = newEpollSet("virtio-net-ctrl"); err != nil {
		w.stopE.Close()
		return nil, err
	}
	if err := w.ep.add(w.stopE.Fd(), tagStop, false); err == nil {
		err = w.ep.add(r.ctrlKick.Fd(), tagTXKick, false)
	}
	if err != nil {
		w.ep.close()
		w.stopE.Close()
		return nil, err
	}
	go w.run()
	return w, nil
}

func (w *netCtrlWorker) run() {
	defer close(w.done)
	for {
		more, err := w.process()
		if err != nil {
			w.r.n.log.Warn("virtio-net control queue stopped", "err", err)
			w.r.a.Fail(err)
			return
		}
		// With commands left over, only look for a stop (or a kick)
		// before the next batch; otherwise park.
		evs, err := w.ep.wait(!more)
		if err != nil {
			w.r.a.Fail(err)
			return
		}
		for _, ev := range evs {
			if ev.Fd == tagStop {
				return
			}
			w.r.ctrlKick.Drain()
		}
	}
}

func (w *netCtrlWorker) stop() {
	w.stopE.Signal()
	<-w.done
	w.ep.close()
	w.stopE.Close()
}

// process answers available commands, at most netCtrlBudget of them, each
// acknowledged (and published, with an interrupt if the driver wants one)
// only after its effect is in place. more reports that the budget ran out
// with commands possibly left: call again after looking for a stop.
func (w *netCtrlWorker) process() (more bool, err error) {
	q := w.r.ctrlQ
	done := 0
	for {
		q.DisableNotification()
		for {
			if done >= netCtrlBudget {
				return true, nil
			}
			ok, err := q.PopInto(&w.chain)
			if err != nil {
				return false, fmt.Errorf("virtio-net control queue: %w", err)
			}
			if !ok {
				break
			}
			done++
			written := w.handle(&w.chain)
			if err := q.AddUsed(w.chain.Head, written); err != nil {
				return false, fmt.Errorf("virtio-net control queue: %w", err)
			}
			q.PublishUsed()
			if q.NeedsInterrupt() {
				if err := w.r.a.Interrupt.Signal(InterruptUsedBuffer); err != nil {
					return false, fmt.Errorf("virtio-net control queue interrupt: %w", err)
				}
			}
		}
		if !q.EnableNotification() {
			return false, nil
		}
	}
}

// handle executes one command and returns the bytes written (the ack).
func (w *netCtrlWorker) handle(c *Chain) uint32 {
	r, n := w.r, w.r.n
	if c.WritableLen < 1 {
		// Nowhere to put the ack: do nothing.
		n.count(false)
		return 0
	}
	res := netCtrlRefused
	if c.ReadableLen <= netCtrlMaxLen {
		if w.buf == nil {
			w.buf = make([]byte, netCtrlMaxLen)
		}
		cmd := w.buf[:c.CopyReadable(w.buf)]
		env := netCtrlEnv{features: r.a.Features, maxPairs: n.cfg.QueuePairs, readyPairs: r.ready}
		res = decideNetCtrl(env, r.filter.Load(), cmd)
	}
	if res.ack == NetCtrlOK {
		if res.pairs > 0 {
			if err := r.setActive(res.pairs); err != nil {
				n.log.Warn("virtio-net control queue", "err", err)
				res.ack = NetCtrlErr
			}
		}
		if res.filter != nil {
			r.filter.Store(res.filter)
			if res.macSet {
				n.mu.Lock()
				n.mac = res.filter.mac
				n.mu.Unlock()
			}
		}
	}
	n.count(res.ack == NetCtrlOK)
	c.FillWritable([]byte{res.ack})
	return 1
}

func (n *Net) count(ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ok {
		n.ctrlOK++
	} else {
		n.ctrlErr++
	}
}
