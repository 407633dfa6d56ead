package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/mmio"
)

// virtio-mmio version 2 register offsets (virtio 1.x, "MMIO Device
// Register Layout").
const (
	mmioMagicValue        = 0x000
	mmioVersion           = 0x004
	mmioDeviceID          = 0x008
	mmioVendorID          = 0x00c
	mmioDeviceFeatures    = 0x010
	mmioDeviceFeaturesSel = 0x014
	mmioDriverFeatures    = 0x020
	mmioDriverFeaturesSel = 0x024
	mmioQueueSel          = 0x030
	mmioQueueNumMax       = 0x034
	mmioQueueNum          = 0x038
	mmioQueueReady        = 0x044
	mmioQueueNotify       = 0x050
	mmioInterruptStatus   = 0x060
	mmioInterruptACK      = 0x064
	mmioStatus            = 0x070
	mmioQueueDescLow      = 0x080
	mmioQueueDescHigh     = 0x084
	mmioQueueDriverLow    = 0x090
	mmioQueueDriverHigh   = 0x094
	mmioQueueDeviceLow    = 0x0a0
	mmioQueueDeviceHigh   = 0x0a4
	mmioSHMSel            = 0x0ac
	mmioSHMLenLow         = 0x0b0
	mmioSHMLenHigh        = 0x0b4
	mmioSHMBaseLow        = 0x0b8
	mmioSHMBaseHigh       = 0x0bc
	mmioQueueReset        = 0x0c0
	mmioConfigGeneration  = 0x0fc
	mmioConfig            = 0x100
)

const (
	// MMIOWindowSize is the size of a virtio-mmio device's register window
	// (registers plus configuration space).
	MMIOWindowSize = 0x1000
	// MMIOQueueNotify is the offset of the QueueNotify register, where the
	// queue notifiers (ioeventfds) listen.
	MMIOQueueNotify = mmioQueueNotify
	// MMIOMagic is the MagicValue register's content ("virt").
	MMIOMagic = 0x74726976
	// MMIOVersion is the transport version implemented (2: virtio 1.x).
	MMIOVersion = 2
	// MMIOMaxQueues bounds the number of queues of one device.
	MMIOMaxQueues = 1024
)

// ErrMMIOConfig: NewMMIOTransport was given an unusable device or config.
var ErrMMIOConfig = errors.New("invalid virtio-mmio configuration")

// MMIOConfig configures a virtio-mmio transport.
type MMIOConfig struct {
	// Base is the guest-physical address of the register window
	// (MMIOWindowSize bytes); it only matters for the notifier addresses.
	Base uint64
	// Mem is the guest memory the queues live in. Required.
	Mem *GuestMemory
	// IRQ asserts the device's interrupt line. nil: interrupts only set
	// InterruptStatus (tests).
	IRQ IRQTrigger
	// IoEvents, when non-nil, receives one ioeventfd per ready queue at
	// DRIVER_OK (all of them in one transaction), handed to the device as
	// Activation.Kicks. nil: QueueNotify writes exit to the VMM and reach
	// the device's QueueNotifier.
	IoEvents IoEvents
	// ExternalNotifiers: the transport registers no ioeventfds even if
	// IoEvents is set; Activation.Kicks is all nil and the device (or a
	// coordinator it delegates to, such as the vhost attach path) registers
	// Activation.Notify itself, typically several devices' queues in one
	// transaction, and deregisters them in Reset.
	ExternalNotifiers bool
	// UsedBufferAlways makes InterruptStatus read with the used-buffer bit
	// set while the device is active, for devices whose used-buffer
	// interrupts bypass the transport (a vhost call eventfd wired straight
	// to an irqfd): the driver then always scans its queues.
	UsedBufferAlways bool
	// VendorID is reported in the VendorID register.
	VendorID uint32
	// Logger receives device errors and (at debug level) ignored guest
	// accesses. nil: discard.
	Logger *slog.Logger
}

// MMIOStats counts guest accesses the transport refused or ignored.
type MMIOStats struct {
	// BadAccesses: register accesses of the wrong size or alignment, or
	// outside the window (reads return 0, writes are ignored).
	BadAccesses uint64
	// IgnoredWrites: well-formed writes the current state does not allow
	// (read-only registers, queue setup after QueueReady or DRIVER_OK,
	// status bits out of order, unknown queue indexes).
	IgnoredWrites uint64
	// IgnoredReads: reads of write-only registers (return 0).
	IgnoredReads uint64
	// FeaturesRefused: FEATURES_OK writes refused by feature negotiation.
	FeaturesRefused uint64
	// DroppedNotifies: QueueNotify writes that reached no one.
	DroppedNotifies uint64
	// DeviceErrors: activation failures and Activation.Fail reports.
	DeviceErrors uint64
}

// MMIOTransport is a virtio-mmio version-2 device window: it implements
// mmio.Device over MMIOWindowSize bytes and drives a Device through the
// virtio status state machine. Its methods are safe for concurrent use.
//
// Guest accesses never panic: wrong-size or unaligned register accesses
// read 0 and are ignored (counted in Stats), as are writes the current
// state forbids. Queue registers are writable only while the selected
// queue is not ready and before DRIVER_OK. FEATURES_OK is refused (reads
// back clear) if the driver selected bits the device did not offer or
// omitted VERSION_1. At DRIVER_OK the ready queues are validated and bound,
// notifiers registered, and Device.Activate called; any failure is unwound
// and reported as DEVICE_NEEDS_RESET plus a configuration-change
// interrupt. Writing 0 to Status resets: Device.Reset, queues, notifiers
// (one transaction), InterruptStatus, and ConfigGeneration is bumped.
//
// Locking: the Device's methods (config access, Activate, Reset,
// QueueNotifier) run with the transport's lock held, so neither they nor a
// worker that Device.Reset waits for may call Read, Write, Notifiers,
// Status or Close. The Activation's Interrupt and Fail, ConfigChanged,
// Active and Stats take no lock and are safe from anywhere. The *Queue
// values are reused from one activation to the next: a device must drop
// them in Reset.
type MMIOTransport struct {
	dev      Device
	notifier QueueNotifier // dev's, or nil
	cfg      MMIOConfig
	log      *slog.Logger
	offered  uint64

	mu             sync.Mutex
	status         uint32
	devFeaturesSel uint32
	drvFeaturesSel uint32
	driverFeatures uint64
	queueSel       uint32
	shmSel         uint32
	queues         []*Queue
	active         bool
	kicks          []*kvm.EventFD // per queue, while active
	notifiers      []notifierReg  // registered with cfg.IoEvents

	// Touched by device goroutines without the lock.
	intStatus  atomic.Uint32
	configGen  atomic.Uint32
	needsReset atomic.Bool
	live       atomic.Bool   // active, for Signal/ConfigChanged
	epoch      atomic.Uint64 // bumped on every reset; stale callbacks drop

	stats struct {
		bad, ignW, ignR, refused, dropped, devErr atomic.Uint64
	}
}

type notifierReg struct {
	queue int
	id    kvm.IoEventID
	ev    *kvm.EventFD
}

var _ mmio.Device = (*MMIOTransport)(nil)

// NewMMIOTransport returns a transport for dev. dev's queue sizes are read
// once here.
func NewMMIOTransport(dev Device, cfg MMIOConfig) (*MMIOTransport, error) {
	if dev == nil {
		return nil, fmt.Errorf("new virtio-mmio transport: nil device: %w", ErrMMIOConfig)
	}
	if cfg.Mem == nil {
		return nil, fmt.Errorf("new virtio-mmio transport: no guest memory: %w", ErrMMIOConfig)
	}
	sizes := dev.QueueMaxSizes()
	if len(sizes) > MMIOMaxQueues {
		return nil, fmt.Errorf("new virtio-mmio transport: %d queues (max %d): %w", len(sizes), MMIOMaxQueues, ErrMMIOConfig)
	}
	t := &MMIOTransport{dev: dev, cfg: cfg, log: cfg.Logger}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.notifier, _ = dev.(QueueNotifier)
	t.offered = (dev.Features() | FeatureVersion1) &^ transportUnsupported
	for i, s := range sizes {
		if s == 0 || s&(s-1) != 0 || s > QueueSizeMax {
			return nil, fmt.Errorf("new virtio-mmio transport: queue %d max size %d: %w", i, s, ErrMMIOConfig)
		}
		t.queues = append(t.queues, NewQueue(s))
	}
	return t, nil
}

// Stats returns the transport's counters.
func (t *MMIOTransport) Stats() MMIOStats {
	return MMIOStats{
		BadAccesses:     t.stats.bad.Load(),
		IgnoredWrites:   t.stats.ignW.Load(),
		IgnoredReads:    t.stats.ignR.Load(),
		FeaturesRefused: t.stats.refused.Load(),
		DroppedNotifies: t.stats.dropped.Load(),
		DeviceErrors:    t.stats.devErr.Load(),
	}
}

// Notifiers returns the number of ioeventfds the transport has registered.
func (t *MMIOTransport) Notifiers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.notifiers)
}

// Active reports whether the device is activated (DRIVER_OK accepted).
func (t *MMIOTransport) Active() bool { return t.live.Load() }

// Status returns the Status register as the guest would read it.
func (t *MMIOTransport) Status() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.statusLocked()
}

// NotifySpecs returns the doorbell of every queue of the device (ready or
// not), for a coordinator that registers notifiers itself.
func (t *MMIOTransport) NotifySpecs() []NotifySpec {
	specs := make([]NotifySpec, len(t.queues))
	for i := range specs {
		specs[i] = t.notifySpec(i)
	}
	return specs
}

func (t *MMIOTransport) notifySpec(i int) NotifySpec {
	return NotifySpec{Queue: i, Addr: t.cfg.Base + mmioQueueNotify, Datamatch: uint64(i)}
}

// ConfigChanged tells the transport that the device's configuration space
// changed: ConfigGeneration is bumped and, if the device is active, a
// configuration-change interrupt is raised. Safe from any goroutine.
func (t *MMIOTransport) ConfigChanged() error {
	if t.live.Load() {
		return t.signal(t.epoch.Load(), InterruptConfigChange)
	}
	t.configGen.Add(1)
	return nil
}

// Close resets the device (Device.Reset) and releases the queue notifiers,
// as a guest reset would. Use it when the VM shuts down.
func (t *MMIOTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resetLocked()
}

// signal implements Interrupt for the activation of the given epoch.
func (t *MMIOTransport) signal(epoch uint64, reason uint32) error {
	reason &= InterruptUsedBuffer | InterruptConfigChange
	if reason == 0 || t.epoch.Load() != epoch {
		return nil
	}
	if reason&InterruptConfigChange != 0 {
		t.configGen.Add(1)
	}
	t.intStatus.Or(reason)
	if t.cfg.IRQ == nil {
		return nil
	}
	if err := t.cfg.IRQ.Trigger(); err != nil {
		return fmt.Errorf("virtio-mmio interrupt: %w", err)
	}
	return nil
}

type mmioInterrupt struct {
	t     *MMIOTransport
	epoch uint64
}

func (i mmioInterrupt) Signal(reason uint32) error { return i.t.signal(i.epoch, reason) }

// deviceFailed sets DEVICE_NEEDS_RESET and raises a configuration-change
// interrupt. It takes no lock, so device workers may call it while the
// transport waits for them in Device.Reset.
func (t *MMIOTransport) deviceFailed(epoch uint64, err error) {
	if t.epoch.Load() != epoch {
		return
	}
	t.stats.devErr.Add(1)
	first := !t.needsReset.Swap(true)
	if !first {
		return
	}
	t.log.Warn("virtio device needs reset", "base", t.cfg.Base, "device", t.dev.DeviceID(), "err", err)
	if serr := t.signal(epoch, InterruptConfigChange); serr != nil {
		t.log.Warn("virtio config interrupt", "base", t.cfg.Base, "err", serr)
	}
}

func (t *MMIOTransport) statusLocked() uint32 {
	s := t.status
	if t.needsReset.Load() {
		s |= StatusNeedsReset
	}
	return s
}

// Read implements mmio.Device.
func (t *MMIOTransport) Read(offset uint64, data []byte) {
	if offset >= mmioConfig && offset < MMIOWindowSize && uint64(len(data)) <= MMIOWindowSize-offset && len(data) > 0 {
		t.mu.Lock()
		t.dev.ReadConfig(offset-mmioConfig, data)
		t.mu.Unlock()
		return
	}
	clear(data)
	if len(data) != 4 || offset%4 != 0 || offset >= mmioConfig {
		t.stats.bad.Add(1)
		t.log.Debug("virtio-mmio bad read", "base", t.cfg.Base, "offset", offset, "len", len(data))
		return
	}
	t.mu.Lock()
	v, ok := t.readLocked(offset)
	t.mu.Unlock()
	if !ok {
		t.stats.ignR.Add(1)
	}
	binary.LittleEndian.PutUint32(data, v)
}

// Write implements mmio.Device.
func (t *MMIOTransport) Write(offset uint64, data []byte) {
	if offset >= mmioConfig && offset < MMIOWindowSize && uint64(len(data)) <= MMIOWindowSize-offset && len(data) > 0 {
		t.mu.Lock()
		t.dev.WriteConfig(offset-mmioConfig, data)
		t.mu.Unlock()
		return
	}
	if len(data) != 4 || offset%4 != 0 || offset >= mmioConfig {
		t.stats.bad.Add(1)
		t.log.Debug("virtio-mmio bad write", "base", t.cfg.Base, "offset", offset, "len", len(data))
		return
	}
	v := binary.LittleEndian.Uint32(data)
	t.mu.Lock()
	ok := t.writeLocked(offset, v)
	t.mu.Unlock()
	if !ok {
		t.stats.ignW.Add(1)
		t.log.Debug("virtio-mmio ignored write", "base", t.cfg.Base, "offset", offset, "value", v)
	}
}

func (t *MMIOTransport) selQueue() *Queue {
	if t.queueSel < uint32(len(t.queues)) {
		return t.queues[t.queueSel]
	}
	return nil
}

// readLocked returns a register's value and whether the register is
// readable.
func (t *MMIOTransport) readLocked(off uint64) (uint32, bool) {
	switch off {
	case mmioMagicValue:
		return MMIOMagic, true
	case mmioVersion:
		return MMIOVersion, true
	case mmioDeviceID:
		return t.dev.DeviceID(), true
	case mmioVendorID:
		return t.cfg.VendorID, true
	case mmioDeviceFeatures:
		switch t.devFeaturesSel {
		case 0:
			return uint32(t.offered), true
		case 1:
			return uint32(t.offered >> 32), true
		}
		return 0, true
	case mmioQueueNumMax:
		if q := t.selQueue(); q != nil {
			return uint32(q.MaxSize), true
		}
		return 0, true
	case mmioQueueReady:
		if q := t.selQueue(); q != nil && q.Ready {
			return 1, true
		}
		return 0, true
	case mmioInterruptStatus:
		s := t.intStatus.Load()
		if t.cfg.UsedBufferAlways && t.active {
			s |= InterruptUsedBuffer
		}
		return s, true
	case mmioStatus:
		return t.statusLocked(), true
	case mmioSHMLenLow, mmioSHMLenHigh, mmioSHMBaseLow, mmioSHMBaseHigh:
		// No shared memory regions: every ID reads length and base -1.
		return ^uint32(0), true
	case mmioQueueReset:
		// VIRTIO_F_RING_RESET is never offered.
		return 0, true
	case mmioConfigGeneration:
		return t.configGen.Load(), true
	}
	return 0, false
}

// queueSetupLocked returns the selected queue if its configuration may be
// written: it exists, is not ready, and the driver has not set DRIVER_OK.
func (t *MMIOTransport) queueSetupLocked() *Queue {
	q := t.selQueue()
	if q == nil || q.Ready || t.status&StatusDriverOK != 0 {
		return nil
	}
	return q
}

func setLow(p *uint64, v uint32)  { *p = *p&^0xffffffff | uint64(v) }
func setHigh(p *uint64, v uint32) { *p = *p&0xffffffff | uint64(v)<<32 }

// writeLocked applies a register write and reports whether it was allowed.
func (t *MMIOTransport) writeLocked(off uint64, v uint32) bool {
	switch off {
	case mmioDeviceFeaturesSel:
		t.devFeaturesSel = v
	case mmioDriverFeatures:
		if t.status&StatusDriver == 0 || t.status&StatusFeaturesOK != 0 {
			return false
		}
		switch t.drvFeaturesSel {
		case 0:
			setLow(&t.driverFeatures, v)
		case 1:
			setHigh(&t.driverFeatures, v)
		default:
			return v == 0 // no feature bits above 63
		}
	case mmioDriverFeaturesSel:
		t.drvFeaturesSel = v
	case mmioQueueSel:
		t.queueSel = v
	case mmioQueueNum:
		q := t.queueSetupLocked()
		if q == nil {
			return false
		}
		if v > 0xffff {
			v = 0 // invalid; refused at DRIVER_OK
		}
		q.Size = uint16(v)
	case mmioQueueReady:
		q := t.selQueue()
		if q == nil || t.status&StatusDriverOK != 0 || v > 1 {
			return false
		}
		q.Ready = v == 1
	case mmioQueueNotify:
		return t.notifyLocked(v)
	case mmioInterruptACK:
		t.intStatus.And(^v)
	case mmioStatus:
		return t.setStatusLocked(v)
	case mmioQueueDescLow, mmioQueueDescHigh, mmioQueueDriverLow, mmioQueueDriverHigh,
		mmioQueueDeviceLow, mmioQueueDeviceHigh:
		q := t.queueSetupLocked()
		if q == nil {
			return false
		}
		switch off {
		case mmioQueueDescLow:
			setLow(&q.DescAddr, v)
		case mmioQueueDescHigh:
			setHigh(&q.DescAddr, v)
		case mmioQueueDriverLow:
			setLow(&q.DriverAddr, v)
		case mmioQueueDriverHigh:
			setHigh(&q.DriverAddr, v)
		case mmioQueueDeviceLow:
			setLow(&q.DeviceAddr, v)
		case mmioQueueDeviceHigh:
			setHigh(&q.DeviceAddr, v)
		}
	case mmioSHMSel:
		t.shmSel = v
	default:
		// Read-only registers, QueueReset (no VIRTIO_F_RING_RESET) and
		// holes.
		return false
	}
	return true
}

// notifyLocked handles a QueueNotify write that exited to the VMM.
func (t *MMIOTransport) notifyLocked(v uint32) bool {
	if v >= uint32(len(t.queues)) {
		t.stats.dropped.Add(1)
		return false
	}
	q := int(v)
	if !t.active || !t.queues[q].Ready {
		// Before DRIVER_OK the device looks at its queues when activated.
		t.stats.dropped.Add(1)
		return true
	}
	if ev := t.kicks[q]; ev != nil {
		// An ioeventfd exists but this write did not hit it (e.g. it
		// raced with registration): deliver it the same way.
		if err := ev.Signal(); err != nil {
			t.log.Warn("virtio-mmio kick", "base", t.cfg.Base, "queue", q, "err", err)
		}
		return true
	}
	if t.notifier != nil {
		t.notifier.NotifyQueue(q)
		return true
	}
	t.stats.dropped.Add(1)
	return true
}

// setStatusLocked implements the device status state machine.
func (t *MMIOTransport) setStatusLocked(v uint32) bool {
	if v == 0 {
		if err := t.resetLocked(); err != nil {
			t.log.Warn("virtio-mmio reset", "base", t.cfg.Base, "err", err)
		}
		return true
	}
	v &= 0xff &^ StatusNeedsReset // NEEDS_RESET belongs to the device
	old := t.status
	if old&^v != 0 {
		// Only a reset clears status bits.
		return false
	}
	add := v &^ old
	ok := true
	if add&StatusAcknowledge != 0 {
		t.status |= StatusAcknowledge
	}
	if add&StatusDriver != 0 {
		if t.status&StatusAcknowledge != 0 {
			t.status |= StatusDriver
		} else {
			ok = false
		}
	}
	if add&StatusFeaturesOK != 0 {
		switch {
		case t.status&StatusDriver == 0:
			ok = false
		case t.driverFeatures&^t.offered != 0 || t.driverFeatures&FeatureVersion1 == 0:
			// Refused: FEATURES_OK stays clear, which the driver checks.
			t.stats.refused.Add(1)
			t.log.Debug("virtio-mmio features refused", "base", t.cfg.Base,
				"driver", fmt.Sprintf("%#x", t.driverFeatures), "offered", fmt.Sprintf("%#x", t.offered))
		default:
			t.status |= StatusFeaturesOK
		}
	}
	if add&StatusFailed != 0 {
		t.status |= StatusFailed
	}
	if add&StatusDriverOK != 0 {
		if t.status&StatusFeaturesOK == 0 || t.status&StatusFailed != 0 {
			ok = false
		} else {
			t.status |= StatusDriverOK
			t.activateLocked()
		}
	}
	if add&^(StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK|StatusFailed) != 0 {
		ok = false // reserved bits are not stored
	}
	return ok
}

// activateLocked starts the device after DRIVER_OK. A failure leaves
// everything released and sets DEVICE_NEEDS_RESET; the driver keeps its
// DRIVER_OK bit and must reset the device.
func (t *MMIOTransport) activateLocked() {
	epoch := t.epoch.Load()
	fail := func(err error) {
		t.deviceFailed(epoch, fmt.Errorf("activate: %w", err))
	}
	features := t.driverFeatures
	for i, q := range t.queues {
		if !q.Ready {
			continue
		}
		q.SetFeatures(features)
		if err := q.Init(t.cfg.Mem); err != nil {
			fail(fmt.Errorf("queue %d: %w", i, err))
			return
		}
	}
	kicks := make([]*kvm.EventFD, len(t.queues))
	if t.cfg.IoEvents != nil && !t.cfg.ExternalNotifiers {
		if err := t.registerNotifiersLocked(kicks); err != nil {
			fail(err)
			return
		}
	}
	notify := make([]NotifySpec, len(t.queues))
	for i := range notify {
		notify[i] = t.notifySpec(i)
	}
	a := Activation{
		Mem:       t.cfg.Mem,
		Queues:    t.queues,
		Features:  features,
		Interrupt: mmioInterrupt{t: t, epoch: epoch},
		Kicks:     kicks,
		Notify:    notify,
		Fail:      func(err error) { t.deviceFailed(epoch, err) },
	}
	if err := t.dev.Activate(a); err != nil {
		t.dev.Reset()
		if rerr := t.releaseNotifiersLocked(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		fail(fmt.Errorf("device: %w", err))
		return
	}
	t.kicks = kicks
	t.active = true
	t.live.Store(true)
}

// registerNotifiersLocked creates an eventfd per ready queue and registers
// them all in one IoEvents transaction, filling kicks. On failure nothing
// stays registered and every eventfd it created is closed (or handed to
// IoEvents to close).
func (t *MMIOTransport) registerNotifiersLocked(kicks []*kvm.EventFD) error {
	// Notifiers left over from a failed release: retry it first, or the
	// new registrations would collide with them.
	if err := t.releaseNotifiersLocked(); err != nil {
		return fmt.Errorf("release stale notifiers: %w", err)
	}
	var evs []notifierReg
	closeAll := func() {
		for _, r := range evs {
			r.ev.Close()
		}
	}
	for i, q := range t.queues {
		if !q.Ready {
			continue
		}
		ev, err := kvm.NewEventFD()
		if err != nil {
			closeAll()
			return fmt.Errorf("queue %d notifier: %w", i, err)
		}
		evs = append(evs, notifierReg{queue: i, ev: ev})
	}
	if len(evs) == 0 {
		return nil
	}
	tx := t.cfg.IoEvents.Begin()
	var regs []notifierReg
	for _, r := range evs {
		id, err := tx.Add(t.notifySpec(r.queue).Ioeventfd(r.ev))
		if err != nil {
			// Drop what this transaction staged: nothing was registered,
			// and the eventfds are still ours.
			err = fmt.Errorf("register queue %d notifier: %w", r.queue, err)
			if aerr := tx.Abort(); aerr != nil {
				err = errors.Join(err, aerr)
			}
			closeAll()
			return err
		}
		r.id = id
		regs = append(regs, r)
	}
	if err := tx.Commit(); err != nil {
		// The failed commit dropped every Add it staged: nothing is
		// registered and the eventfds are still ours.
		closeAll()
		return fmt.Errorf("register %d queue notifiers: %w", len(regs), err)
	}
	for _, r := range regs {
		kicks[r.queue] = r.ev
	}
	t.notifiers = regs
	return nil
}

// withdrawLocked stages RemoveAndClose for regs in tx and returns the
// eventfds IoEvents took over; the others were not registered and stay the
// caller's to close.
func (t *MMIOTransport) withdrawLocked(tx kvm.IoEventTxn, regs []notifierReg) map[*kvm.EventFD]bool {
	handed := make(map[*kvm.EventFD]bool, len(regs))
	for _, r := range regs {
		if err := tx.RemoveAndClose(r.id); err == nil {
			handed[r.ev] = true
		}
	}
	return handed
}

// releaseNotifiersLocked deregisters every notifier in one transaction;
// IoEvents closes the eventfds after the commit. If the commit fails the
// notifiers stay registered (and recorded) for a later retry.
func (t *MMIOTransport) releaseNotifiersLocked() error {
	if len(t.notifiers) == 0 {
		return nil
	}
	tx := t.cfg.IoEvents.Begin()
	handed := t.withdrawLocked(tx, t.notifiers)
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("release %d queue notifiers: %w", len(t.notifiers), err)
	}
	for _, r := range t.notifiers {
		if !handed[r.ev] {
			r.ev.Close() // unknown to IoEvents: not registered
		}
	}
	t.notifiers = nil
	return nil
}

// resetLocked is a device reset (Status = 0).
func (t *MMIOTransport) resetLocked() error {
	t.epoch.Add(1) // stale Interrupt/Fail callbacks are dropped from now on
	t.live.Store(false)
	t.dev.Reset()
	err := t.releaseNotifiersLocked()
	for _, q := range t.queues {
		q.Reset()
	}
	t.status = 0
	t.devFeaturesSel, t.drvFeaturesSel = 0, 0
	t.driverFeatures = 0
	t.queueSel, t.shmSel = 0, 0
	t.active = false
	t.kicks = nil
	t.intStatus.Store(0)
	t.needsReset.Store(false)
	t.configGen.Add(1)
	return err
}
