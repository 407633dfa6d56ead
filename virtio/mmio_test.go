package virtio_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

const mmioBase = 0xd000_0000

type rig struct {
	tr      *virtio.MMIOTransport
	dev     *fakeDevice
	io      *fakeIoEvents
	irq     *fakeIRQ
	mem     *vt.Memory
	drivers []*vt.Driver // one per queue
}

type rigOpts struct {
	sizes    []uint16
	features uint64
	noIO     bool
	notify   bool // device implements QueueNotifier
	external bool
	always   bool
}

func newRig(t *testing.T, o rigOpts) *rig {
	t.Helper()
	if o.sizes == nil {
		o.sizes = []uint16{256, 256}
	}
	mem, err := vt.NewMemory(0x4000_0000, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{io: newFakeIoEvents(), irq: &fakeIRQ{}, mem: mem}
	var dev virtio.Device
	if o.notify {
		nd := &notifyingDevice{fakeDevice{id: virtio.DeviceIDNet, features: o.features, sizes: o.sizes}}
		r.dev, dev = &nd.fakeDevice, nd
	} else {
		r.dev = &fakeDevice{id: virtio.DeviceIDNet, features: o.features, sizes: o.sizes}
		dev = r.dev
	}
	cfg := virtio.MMIOConfig{Base: mmioBase, Mem: mem.Guest, IRQ: r.irq, IoEvents: r.io,
		VendorID: 0x1af4, ExternalNotifiers: o.external, UsedBufferAlways: o.always}
	if o.noIO {
		cfg.IoEvents = nil
	}
	r.tr, err = virtio.NewMMIOTransport(dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range o.sizes {
		d, err := vt.NewDriver(mem, min(s, 64))
		if err != nil {
			t.Fatal(err)
		}
		r.drivers = append(r.drivers, d)
	}
	t.Cleanup(func() { r.tr.Close() })
	return r
}

func (r *rig) read(off uint64) uint32     { return vt.ReadReg(r.tr, off) }
func (r *rig) write(off uint64, v uint32) { vt.WriteReg(r.tr, off, v) }

// toFeaturesOK takes the device to ACK|DRIVER|FEATURES_OK with features.
func (r *rig) toFeaturesOK(t *testing.T, features uint64) {
	t.Helper()
	r.write(vt.RegStatus, virtio.StatusAcknowledge)
	r.write(vt.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	r.write(vt.RegDriverFeaturesSel, 0)
	r.write(vt.RegDriverFeatures, uint32(features))
	r.write(vt.RegDriverFeaturesSel, 1)
	r.write(vt.RegDriverFeatures, uint32(features>>32))
	r.write(vt.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	if r.read(vt.RegStatus)&virtio.StatusFeaturesOK == 0 {
		t.Fatalf("features %#x refused", features)
	}
}

const statusOK = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK

func TestNewMMIOTransportErrors(t *testing.T) {
	mem, _ := vt.NewMemory(0, 4096)
	tests := []struct {
		name string
		dev  virtio.Device
		cfg  virtio.MMIOConfig
	}{
		{"nil device", nil, virtio.MMIOConfig{Mem: mem.Guest}},
		{"no memory", &fakeDevice{sizes: []uint16{8}}, virtio.MMIOConfig{}},
		{"queue size 0", &fakeDevice{sizes: []uint16{0}}, virtio.MMIOConfig{Mem: mem.Guest}},
		{"queue size not power of 2", &fakeDevice{sizes: []uint16{8, 100}}, virtio.MMIOConfig{Mem: mem.Guest}},
		{"queue size too big", &fakeDevice{sizes: []uint16{65535}}, virtio.MMIOConfig{Mem: mem.Guest}},
		{"too many queues", &fakeDevice{sizes: make([]uint16, virtio.MMIOMaxQueues+1)}, virtio.MMIOConfig{Mem: mem.Guest}},
	}
	for _, tt := range tests {
		if _, err := virtio.NewMMIOTransport(tt.dev, tt.cfg); !errors.Is(err, virtio.ErrMMIOConfig) {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
}

func TestMMIORegisterReads(t *testing.T) {
	r := newRig(t, rigOpts{sizes: []uint16{256, 16, 1024}, features: 1<<5 | virtio.FeatureRingPacked | virtio.FeatureRingEventIdx})
	gen := r.read(vt.RegConfigGeneration)
	tests := []struct {
		name    string
		sel     func()
		off     uint64
		want    uint32
		ignored bool // write-only register: reads 0 and is counted
	}{
		{"magic", nil, vt.RegMagicValue, virtio.MMIOMagic, false},
		{"version", nil, vt.RegVersion, 2, false},
		{"device id", nil, vt.RegDeviceID, virtio.DeviceIDNet, false},
		{"vendor id", nil, vt.RegVendorID, 0x1af4, false},
		{"features low", func() { r.write(vt.RegDeviceFeaturesSel, 0) }, vt.RegDeviceFeatures, 1<<5 | 1<<29, false},
		{"features high (VERSION_1, no packed)", func() { r.write(vt.RegDeviceFeaturesSel, 1) }, vt.RegDeviceFeatures, 1, false},
		{"features sel 2", func() { r.write(vt.RegDeviceFeaturesSel, 2) }, vt.RegDeviceFeatures, 0, false},
		{"features sel huge", func() { r.write(vt.RegDeviceFeaturesSel, 0xffffffff) }, vt.RegDeviceFeatures, 0, false},
		{"queue 0 max", func() { r.write(vt.RegQueueSel, 0) }, vt.RegQueueNumMax, 256, false},
		{"queue 1 max", func() { r.write(vt.RegQueueSel, 1) }, vt.RegQueueNumMax, 16, false},
		{"queue 2 max", func() { r.write(vt.RegQueueSel, 2) }, vt.RegQueueNumMax, 1024, false},
		{"queue 3 absent", func() { r.write(vt.RegQueueSel, 3) }, vt.RegQueueNumMax, 0, false},
		{"queue ready initially 0", func() { r.write(vt.RegQueueSel, 0) }, vt.RegQueueReady, 0, false},
		{"absent queue ready", func() { r.write(vt.RegQueueSel, 99) }, vt.RegQueueReady, 0, false},
		{"interrupt status", nil, vt.RegInterruptStatus, 0, false},
		{"status", nil, vt.RegStatus, 0, false},
		{"shm len low", func() { r.write(vt.RegSHMSel, 0) }, vt.RegSHMLenLow, 0xffffffff, false},
		{"shm len high", nil, vt.RegSHMLenHigh, 0xffffffff, false},
		{"shm base low", func() { r.write(vt.RegSHMSel, 7) }, vt.RegSHMBaseLow, 0xffffffff, false},
		{"shm base high", nil, vt.RegSHMBaseHigh, 0xffffffff, false},
		{"queue reset", nil, vt.RegQueueReset, 0, false},
		{"config generation", nil, vt.RegConfigGeneration, gen, false},
		{"features sel (W)", nil, vt.RegDeviceFeaturesSel, 0, true},
		{"driver features (W)", nil, vt.RegDriverFeatures, 0, true},
		{"driver features sel (W)", nil, vt.RegDriverFeaturesSel, 0, true},
		{"queue sel (W)", nil, vt.RegQueueSel, 0, true},
		{"queue num (W)", nil, vt.RegQueueNum, 0, true},
		{"queue notify (W)", nil, vt.RegQueueNotify, 0, true},
		{"interrupt ack (W)", nil, vt.RegInterruptACK, 0, true},
		{"queue desc (W)", nil, vt.RegQueueDescLow, 0, true},
		{"queue device high (W)", nil, vt.RegQueueDeviceHigh, 0, true},
		{"shm sel (W)", nil, vt.RegSHMSel, 0, true},
		{"hole 0x40", nil, 0x40, 0, true},
		{"hole 0xf8", nil, 0xf8, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.sel != nil {
				tt.sel()
			}
			before := r.tr.Stats().IgnoredReads
			if got := r.read(tt.off); got != tt.want {
				t.Errorf("read %#x = %#x, want %#x", tt.off, got, tt.want)
			}
			if counted := r.tr.Stats().IgnoredReads - before; counted != map[bool]uint64{true: 1, false: 0}[tt.ignored] {
				t.Errorf("IgnoredReads grew by %d", counted)
			}
		})
	}
}

func TestMMIOBadAccesses(t *testing.T) {
	r := newRig(t, rigOpts{})
	tests := []struct {
		off uint64
		n   int
	}{
		{vt.RegMagicValue, 1}, {vt.RegMagicValue, 2}, {vt.RegMagicValue, 8}, {vt.RegStatus, 2},
		{vt.RegMagicValue + 1, 4}, {vt.RegStatus + 2, 4}, {0xfe, 4}, {0x1000, 4}, {0xffff_ffff_ffff_fffc, 4},
		{0xffc, 8}, {0x100, 0x1000}, {vt.RegStatus, 0},
	}
	for _, tt := range tests {
		before := r.tr.Stats().BadAccesses
		data := make([]byte, tt.n)
		for i := range data {
			data[i] = 0xff
		}
		r.tr.Read(tt.off, data)
		for i, b := range data {
			if b != 0 {
				t.Errorf("read %#x/%d: byte %d = %#x, want 0", tt.off, tt.n, i, b)
			}
		}
		// A bad write must not change Status.
		w := make([]byte, tt.n)
		if tt.n > 0 {
			w[0] = 1
		}
		r.tr.Write(tt.off, w)
		if s := r.read(vt.RegStatus); s != 0 {
			t.Errorf("write %#x/%d changed status to %#x", tt.off, tt.n, s)
		}
		if got := r.tr.Stats().BadAccesses - before; got != 2 {
			t.Errorf("%#x/%d: BadAccesses grew by %d, want 2", tt.off, tt.n, got)
		}
	}
}

func TestMMIOFeatureNegotiation(t *testing.T) {
	const devFeat = 1<<0 | 1<<5 | virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc | virtio.FeatureRingPacked
	tests := []struct {
		name   string
		driver uint64
		extra  func(r *rig) // after writing features, before FEATURES_OK
		ok     bool
	}{
		{"all offered", devFeat&^virtio.FeatureRingPacked | virtio.FeatureVersion1, nil, true},
		{"version 1 only", virtio.FeatureVersion1, nil, true},
		{"subset", 1<<5 | virtio.FeatureVersion1, nil, true},
		{"no VERSION_1", 1 << 5, nil, false},
		{"nothing", 0, nil, false},
		{"unoffered device bit", 1<<7 | virtio.FeatureVersion1, nil, false},
		{"packed ring (masked by transport)", virtio.FeatureRingPacked | virtio.FeatureVersion1, nil, false},
		{"ring reset (not offered)", virtio.FeatureRingReset | virtio.FeatureVersion1, nil, false},
		{"sel 2 nonzero is ignored", virtio.FeatureVersion1, func(r *rig) {
			r.write(vt.RegDriverFeaturesSel, 2)
			r.write(vt.RegDriverFeatures, 1)
		}, true},
		{"high word overwritten", virtio.FeatureVersion1, func(r *rig) {
			r.write(vt.RegDriverFeaturesSel, 1)
			r.write(vt.RegDriverFeatures, 0)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOpts{features: devFeat})
			r.write(vt.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
			r.write(vt.RegDriverFeaturesSel, 0)
			r.write(vt.RegDriverFeatures, uint32(tt.driver))
			r.write(vt.RegDriverFeaturesSel, 1)
			r.write(vt.RegDriverFeatures, uint32(tt.driver>>32))
			if tt.extra != nil {
				tt.extra(r)
			}
			r.write(vt.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
			got := r.read(vt.RegStatus)
			if (got&virtio.StatusFeaturesOK != 0) != tt.ok {
				t.Fatalf("status %#x, want FEATURES_OK %v", got, tt.ok)
			}
			if got&(virtio.StatusAcknowledge|virtio.StatusDriver) != virtio.StatusAcknowledge|virtio.StatusDriver {
				t.Errorf("status %#x lost earlier bits", got)
			}
			if !tt.ok {
				if r.tr.Stats().FeaturesRefused != 1 {
					t.Errorf("FeaturesRefused = %d", r.tr.Stats().FeaturesRefused)
				}
				return
			}
			// Features are frozen after FEATURES_OK, and the negotiated set
			// reaches the device.
			r.write(vt.RegDriverFeaturesSel, 0)
			r.write(vt.RegDriverFeatures, 0)
			vt.SetupQueue(r.tr, 0, r.drivers[0])
			r.write(vt.RegStatus, statusOK)
			a, ok := r.dev.lastActivation()
			if !ok || a.Features != tt.driver {
				t.Errorf("activation features %#x (activated %v), want %#x", a.Features, ok, tt.driver)
			}
			q := a.Queues[0]
			if q.EventIdx != (tt.driver&virtio.FeatureRingEventIdx != 0) || q.IndirectDesc != (tt.driver&virtio.FeatureRingIndirectDesc != 0) {
				t.Errorf("queue features EventIdx %v IndirectDesc %v", q.EventIdx, q.IndirectDesc)
			}
		})
	}
	t.Run("driver features need DRIVER", func(t *testing.T) {
		r := newRig(t, rigOpts{features: devFeat})
		r.write(vt.RegDriverFeaturesSel, 1)
		r.write(vt.RegDriverFeatures, 1) // before DRIVER: ignored
		r.write(vt.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
		r.write(vt.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
		if r.read(vt.RegStatus)&virtio.StatusFeaturesOK != 0 {
			t.Error("features written before DRIVER were kept")
		}
	})
}

func TestMMIOStatusMachine(t *testing.T) {
	const (
		A  = virtio.StatusAcknowledge
		D  = virtio.StatusDriver
		F  = virtio.StatusFeaturesOK
		OK = virtio.StatusDriverOK
		X  = virtio.StatusFailed
		NR = virtio.StatusNeedsReset
	)
	tests := []struct {
		name    string
		writes  []uint32
		want    uint32
		active  bool
		ignored uint64
	}{
		{"ack", []uint32{A}, A, false, 0},
		{"driver without ack", []uint32{D}, 0, false, 1},
		{"ack then driver", []uint32{A, A | D}, A | D, false, 0},
		{"ack and driver at once", []uint32{A | D}, A | D, false, 0},
		{"features ok without driver", []uint32{A, A | F}, A, false, 1},
		{"driver ok without features ok", []uint32{A, A | D, A | D | OK}, A | D, false, 1},
		{"full sequence", []uint32{A, A | D, A | D | F, A | D | F | OK}, A | D | F | OK, true, 0},
		{"clearing a bit is ignored", []uint32{A, A | D, A}, A | D, false, 1},
		{"failed", []uint32{A, A | D, A | D | X}, A | D | X, false, 0},
		{"no driver ok after failed", []uint32{A, A | D, A | D | F, A | D | F | X, A | D | F | X | OK}, A | D | F | X, false, 1},
		{"needs reset bit is the device's", []uint32{A | NR}, A, false, 0},
		{"reserved bits", []uint32{A | 0x10 | 0x20}, A, false, 1},
		{"high bits ignored", []uint32{0x100 | A}, A, false, 0},
		{"rewrite is harmless", []uint32{A, A, A}, A, false, 0},
		{"reset", []uint32{A, A | D, 0}, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOpts{})
			for _, w := range tt.writes {
				if w&F != 0 && r.read(vt.RegStatus)&D != 0 && r.read(vt.RegStatus)&F == 0 {
					r.write(vt.RegDriverFeaturesSel, 1)
					r.write(vt.RegDriverFeatures, 1) // VERSION_1
				}
				r.write(vt.RegStatus, w)
			}
			if got := r.read(vt.RegStatus); got != tt.want {
				t.Errorf("status = %#x, want %#x", got, tt.want)
			}
			if r.tr.Active() != tt.active {
				t.Errorf("Active = %v", r.tr.Active())
			}
			if got := r.tr.Stats().IgnoredWrites; got != tt.ignored {
				t.Errorf("IgnoredWrites = %d, want %d", got, tt.ignored)
			}
		})
	}
}

func TestMMIOQueueRegisters(t *testing.T) {
	r := newRig(t, rigOpts{sizes: []uint16{256, 256, 256}})
	r.toFeaturesOK(t, virtio.FeatureVersion1)
	// Queue 0: 64-bit addresses split into halves.
	r.write(vt.RegQueueSel, 0)
	r.write(vt.RegQueueNum, 32)
	r.write(vt.RegQueueDescLow, 0x4000_1000)
	r.write(vt.RegQueueDescHigh, 0)
	r.write(vt.RegQueueDriverLow, 0x4000_2000)
	r.write(vt.RegQueueDriverHigh, 0)
	r.write(vt.RegQueueDeviceLow, 0x4000_3000)
	r.write(vt.RegQueueDeviceHigh, 0)
	r.write(vt.RegQueueReady, 1)
	if r.read(vt.RegQueueReady) != 1 {
		t.Fatal("QueueReady did not read back 1")
	}
	// Ready: further setup writes are ignored.
	ign := r.tr.Stats().IgnoredWrites
	r.write(vt.RegQueueNum, 64)
	r.write(vt.RegQueueDescHigh, 0x1234)
	if got := r.tr.Stats().IgnoredWrites - ign; got != 2 {
		t.Errorf("writes to a ready queue: %d ignored, want 2", got)
	}
	// Queue 1: set up, then un-readied (allowed before DRIVER_OK).
	r.write(vt.RegQueueSel, 1)
	r.write(vt.RegQueueReady, 1)
	r.write(vt.RegQueueReady, 0)
	if r.read(vt.RegQueueReady) != 0 {
		t.Error("QueueReady 0 did not read back")
	}
	ign = r.tr.Stats().IgnoredWrites
	r.write(vt.RegQueueReady, 2) // not 0 or 1
	r.write(vt.RegQueueSel, 7)   // absent queue: setup ignored
	r.write(vt.RegQueueNum, 8)
	r.write(vt.RegQueueReady, 1)
	r.write(vt.RegQueueDescLow, 8)
	r.write(vt.RegQueueReset, 1) // RING_RESET never offered
	if got := r.tr.Stats().IgnoredWrites - ign; got != 5 {
		t.Errorf("%d ignored, want 5", got)
	}
	// Queue 2 on the last queue left unconfigured. DRIVER_OK binds queue 0.
	r.write(vt.RegStatus, statusOK)
	a, ok := r.dev.lastActivation()
	if !ok {
		t.Fatalf("not activated (status %#x)", r.read(vt.RegStatus))
	}
	q := a.Queues[0]
	if !q.Ready || !q.Bound() || q.Size != 32 || q.DescAddr != 0x4000_1000 || q.DriverAddr != 0x4000_2000 || q.DeviceAddr != 0x4000_3000 {
		t.Errorf("queue 0 = %+v", *q)
	}
	if a.Queues[1].Ready || a.Queues[1].Bound() || a.Queues[2].Ready {
		t.Error("unready queues were bound")
	}
	// After DRIVER_OK nothing about queues can change.
	ign = r.tr.Stats().IgnoredWrites
	r.write(vt.RegQueueSel, 1)
	r.write(vt.RegQueueNum, 16)
	r.write(vt.RegQueueReady, 1)
	r.write(vt.RegQueueSel, 0)
	r.write(vt.RegQueueReady, 0)
	if got := r.tr.Stats().IgnoredWrites - ign; got != 3 {
		t.Errorf("%d ignored after DRIVER_OK, want 3", got)
	}
	if a.Queues[1].Ready || !a.Queues[0].Ready {
		t.Error("queue state changed after DRIVER_OK")
	}
}

func TestMMIOActivateIoEvents(t *testing.T) {
	check := testutil.CheckFDLeaks(t)
	r := newRig(t, rigOpts{sizes: []uint16{64, 64, 64, 64}})
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers[0], nil, r.drivers[2], r.drivers[3]); err != nil {
		t.Fatal(err)
	}
	if r.io.begins != 1 || r.io.commits != 1 || r.io.applied != 1 {
		t.Errorf("%d Begin, %d Commit, %d applied; want exactly one transaction", r.io.begins, r.io.commits, r.io.applied)
	}
	if r.tr.Notifiers() != 3 {
		t.Errorf("Notifiers = %d, want 3", r.tr.Notifiers())
	}
	a, _ := r.dev.lastActivation()
	regs := r.io.registered()
	slices.SortFunc(regs, func(x, y kvm.Ioeventfd) int { return int(x.Datamatch) - int(y.Datamatch) })
	wantQueues := []uint64{0, 2, 3}
	if len(regs) != len(wantQueues) {
		t.Fatalf("%d registrations", len(regs))
	}
	for i, e := range regs {
		q := wantQueues[i]
		if e.Addr != mmioBase+virtio.MMIOQueueNotify || e.Len != 4 || !e.HasDatamatch || e.Datamatch != q {
			t.Errorf("registration %d = %v", i, e)
		}
		if e.Event != a.Kicks[q] || e.Event == nil {
			t.Errorf("queue %d kick is not the registered eventfd", q)
		}
	}
	if a.Kicks[1] != nil || len(a.Kicks) != 4 {
		t.Errorf("kicks = %v", a.Kicks)
	}
	if a.Notify[3] != (virtio.NotifySpec{Queue: 3, Addr: mmioBase + 0x50, Datamatch: 3}) {
		t.Errorf("Notify[3] = %+v", a.Notify[3])
	}
	if a.Mem != r.mem.Guest || a.Interrupt == nil || a.Fail == nil {
		t.Error("activation is missing fields")
	}
	// A QueueNotify that exits anyway is delivered through the eventfd.
	r.write(vt.RegQueueNotify, 2)
	if n, err := a.Kicks[2].Drain(); n != 1 || err != nil {
		t.Errorf("kick via MMIO exit: drained %d, %v", n, err)
	}

	// Reset: device reset, one transaction removing everything, fds closed.
	kicks := slices.Clone(a.Kicks)
	gen := r.read(vt.RegConfigGeneration)
	resets := r.dev.resets
	r.write(vt.RegStatus, 0)
	if r.dev.resets != resets+1 {
		t.Errorf("device resets = %d", r.dev.resets)
	}
	if r.io.begins != 2 || r.io.commits != 2 || len(r.io.registered()) != 0 || r.tr.Notifiers() != 0 {
		t.Errorf("after reset: %d begins, %d commits, %d registered", r.io.begins, r.io.commits, len(r.io.registered()))
	}
	for i, k := range kicks {
		if k != nil && k.Fd() >= 0 {
			t.Errorf("kick %d still open after reset", i)
		}
	}
	if r.read(vt.RegConfigGeneration) == gen {
		t.Error("config generation not bumped by reset")
	}
	for i := uint32(0); i < 4; i++ {
		r.write(vt.RegQueueSel, i)
		if r.read(vt.RegQueueReady) != 0 {
			t.Errorf("queue %d still ready after reset", i)
		}
	}
	if r.tr.Active() || a.Queues[0].Bound() {
		t.Error("still active after reset")
	}
	// And it can be brought up again.
	for _, d := range r.drivers {
		d.SetAvailIdx(0)
	}
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	if r.tr.Notifiers() != 4 {
		t.Errorf("Notifiers after re-init = %d", r.tr.Notifiers())
	}
	if err := r.tr.Close(); err != nil {
		t.Fatal(err)
	}
	check()
}

func TestMMIOActivateFailures(t *testing.T) {
	tests := []struct {
		name   string
		prep   func(t *testing.T, r *rig)
		queues func(r *rig) []*vt.Driver
		txns   int // IoEvents transactions expected
	}{
		{"add fails", func(_ *testing.T, r *rig) { r.io.failAddAt = 2 }, nil, 1},
		{"first add fails", func(_ *testing.T, r *rig) { r.io.failAddAt = 1 }, nil, 1},
		{"commit fails", func(_ *testing.T, r *rig) { r.io.failCommit = true }, nil, 1},
		// Registered, then unwound: two transactions.
		{"device activate fails", func(_ *testing.T, r *rig) { r.dev.activateErr = errInjected }, nil, 2},
		{"queue outside memory", nil, func(r *rig) []*vt.Driver {
			bad := *r.drivers[1]
			bad.UsedAddr = 0x1000
			return []*vt.Driver{r.drivers[0], &bad, r.drivers[2]}
		}, 0},
		{"queue size above max", nil, func(r *rig) []*vt.Driver {
			bad := *r.drivers[2]
			bad.Size = 512
			return []*vt.Driver{r.drivers[0], r.drivers[1], &bad}
		}, 0},
		{"collision with a stale registration", func(t *testing.T, r *rig) {
			// Someone else holds queue 1's doorbell: the commit collides.
			ev := kvmtest.NewEventFD(t)
			tx := r.io.Begin()
			tx.Add(virtio.NotifySpec{Queue: 1, Addr: mmioBase + 0x50, Datamatch: 1}.Ioeventfd(ev))
			tx.Commit()
			r.io.begins, r.io.commits = 0, 0
		}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOpts{sizes: []uint16{64, 64, 64}})
			if tt.prep != nil {
				tt.prep(t, r)
			}
			check := testutil.CheckFDLeaks(t)
			drivers := r.drivers
			if tt.queues != nil {
				drivers = tt.queues(r)
			}
			before := len(r.io.registered())
			err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, drivers...)
			if err == nil {
				t.Fatal("InitMMIO succeeded")
			}
			st := r.read(vt.RegStatus)
			if st&virtio.StatusNeedsReset == 0 {
				t.Errorf("status %#x lacks NEEDS_RESET", st)
			}
			if r.read(vt.RegInterruptStatus)&virtio.InterruptConfigChange == 0 || r.irq.count() == 0 {
				t.Error("no configuration-change interrupt")
			}
			if r.tr.Active() || r.tr.Notifiers() != 0 || len(r.io.registered()) != before {
				t.Errorf("active %v, %d notifiers, %d registered (was %d)", r.tr.Active(), r.tr.Notifiers(), len(r.io.registered()), before)
			}
			// Every transaction ends, by a Commit or an Abort.
			if begins, commits, aborts, _ := r.io.counts(); begins != tt.txns || commits+aborts != tt.txns {
				t.Errorf("%d Begin / %d Commit / %d Abort, want %d transactions", begins, commits, aborts, tt.txns)
			}
			if r.tr.Stats().DeviceErrors == 0 {
				t.Error("DeviceErrors not counted")
			}
			// Every eventfd the transport created is closed (the stale one of
			// the collision case belongs to the test).
			if n := r.io.openSeen() - before; n != 0 {
				t.Errorf("%d eventfds left open", n)
			}
			check()
			// The guest resets; NEEDS_RESET clears and a clean init works.
			r.write(vt.RegStatus, 0)
			if s := r.read(vt.RegStatus); s != 0 || r.read(vt.RegInterruptStatus) != 0 {
				t.Errorf("after reset: status %#x, interrupt status %#x", s, r.read(vt.RegInterruptStatus))
			}
			if tt.name == "collision with a stale registration" {
				return
			}
			r.dev.activateErr = nil
			if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
				t.Fatalf("re-init after failure: %v", err)
			}
			if r.tr.Notifiers() != 3 {
				t.Errorf("Notifiers = %d", r.tr.Notifiers())
			}
		})
	}
}

func TestMMIONotifyWithoutIoEvents(t *testing.T) {
	r := newRig(t, rigOpts{noIO: true, notify: true, sizes: []uint16{64, 64}})
	r.write(vt.RegQueueNotify, 0) // before DRIVER_OK: dropped
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	a, _ := r.dev.lastActivation()
	if a.Kicks[0] != nil || a.Kicks[1] != nil || r.tr.Notifiers() != 0 {
		t.Error("kick eventfds without IoEvents")
	}
	r.write(vt.RegQueueNotify, 1)
	r.write(vt.RegQueueNotify, 0)
	r.write(vt.RegQueueNotify, 2)          // no such queue
	r.write(vt.RegQueueNotify, 0x1_0000+1) // not a queue index
	if !slices.Equal(r.dev.notified, []int{1, 0}) {
		t.Errorf("notified = %v", r.dev.notified)
	}
	if got := r.tr.Stats().DroppedNotifies; got != 3 {
		t.Errorf("DroppedNotifies = %d, want 3", got)
	}
}

func TestMMIOExternalNotifiers(t *testing.T) {
	r := newRig(t, rigOpts{external: true, notify: true, sizes: []uint16{64, 64}})
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	a, _ := r.dev.lastActivation()
	if r.io.begins != 0 || r.tr.Notifiers() != 0 || a.Kicks[0] != nil {
		t.Error("transport registered notifiers with ExternalNotifiers")
	}
	want := []virtio.NotifySpec{{0, mmioBase + 0x50, 0}, {1, mmioBase + 0x50, 1}}
	if !slices.Equal(a.Notify, want) || !slices.Equal(r.tr.NotifySpecs(), want) {
		t.Errorf("Notify = %v / %v", a.Notify, r.tr.NotifySpecs())
	}
	e := want[1].Ioeventfd(nil)
	if e.Len != 4 || !e.HasDatamatch || e.Datamatch != 1 || e.Addr != mmioBase+0x50 {
		t.Errorf("Ioeventfd = %+v", e)
	}
	r.write(vt.RegQueueNotify, 1)
	if !slices.Equal(r.dev.notified, []int{1}) {
		t.Errorf("notified = %v", r.dev.notified)
	}
}

func TestMMIOInterrupts(t *testing.T) {
	r := newRig(t, rigOpts{})
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	a, _ := r.dev.lastActivation()
	gen := r.read(vt.RegConfigGeneration)
	if err := a.Interrupt.Signal(virtio.InterruptUsedBuffer); err != nil {
		t.Fatal(err)
	}
	if r.read(vt.RegInterruptStatus) != 1 || r.irq.count() != 1 || r.read(vt.RegConfigGeneration) != gen {
		t.Errorf("used buffer: status %#x, %d irqs", r.read(vt.RegInterruptStatus), r.irq.count())
	}
	a.Interrupt.Signal(virtio.InterruptConfigChange | 0x80) // undefined bits dropped
	if r.read(vt.RegInterruptStatus) != 3 || r.read(vt.RegConfigGeneration) == gen {
		t.Errorf("config change: status %#x, generation %d (was %d)", r.read(vt.RegInterruptStatus), r.read(vt.RegConfigGeneration), gen)
	}
	r.write(vt.RegInterruptACK, 1)
	if r.read(vt.RegInterruptStatus) != 2 {
		t.Errorf("after ACK 1: %#x", r.read(vt.RegInterruptStatus))
	}
	r.write(vt.RegInterruptACK, 2)
	if r.read(vt.RegInterruptStatus) != 0 {
		t.Errorf("after ACK 2: %#x", r.read(vt.RegInterruptStatus))
	}
	// Fail: NEEDS_RESET plus a config interrupt, once.
	irqs := r.irq.count()
	a.Fail(errors.New("queue broke"))
	a.Fail(errors.New("again"))
	if s := r.read(vt.RegStatus); s != statusOK|virtio.StatusNeedsReset {
		t.Errorf("status after Fail = %#x", s)
	}
	if r.read(vt.RegInterruptStatus) != virtio.InterruptConfigChange || r.irq.count() != irqs+1 {
		t.Errorf("Fail: interrupt status %#x, %d new irqs", r.read(vt.RegInterruptStatus), r.irq.count()-irqs)
	}
	// After reset, callbacks of the old activation are dropped.
	r.write(vt.RegStatus, 0)
	irqs = r.irq.count()
	a.Interrupt.Signal(virtio.InterruptUsedBuffer)
	a.Fail(errors.New("late"))
	if r.read(vt.RegInterruptStatus) != 0 || r.read(vt.RegStatus) != 0 || r.irq.count() != irqs {
		t.Error("stale activation raised an interrupt")
	}
}

func TestMMIOUsedBufferAlways(t *testing.T) {
	r := newRig(t, rigOpts{always: true})
	if r.read(vt.RegInterruptStatus) != 0 {
		t.Error("used-buffer bit set before activation")
	}
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	r.write(vt.RegInterruptACK, 1)
	if r.read(vt.RegInterruptStatus) != 1 {
		t.Error("used-buffer bit not reported while active")
	}
}

func TestMMIOConfigSpace(t *testing.T) {
	r := newRig(t, rigOpts{})
	copy(r.dev.config[:], []byte{1, 2, 3, 4, 5, 6, 7, 8})
	for _, tt := range []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0x100, 1, []byte{1}},
		{0x101, 2, []byte{2, 3}},
		{0x104, 4, []byte{5, 6, 7, 8}},
		{0x100, 8, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{0x106, 4, []byte{7, 8, 0, 0}}, // device zero-fills past its config
		{0xffc, 4, []byte{0, 0, 0, 0}},
	} {
		got := make([]byte, tt.n)
		r.tr.Read(tt.off, got)
		if string(got) != string(tt.want) {
			t.Errorf("config read %#x/%d = %v, want %v", tt.off, tt.n, got, tt.want)
		}
	}
	r.tr.Write(0x102, []byte{0xaa, 0xbb})
	if r.dev.config[2] != 0xaa || r.dev.config[3] != 0xbb {
		t.Errorf("config write: %v", r.dev.config)
	}
	// An access running past the window is refused as a whole.
	r.tr.Write(0xffe, []byte{1, 2, 3, 4})
	if r.tr.Stats().BadAccesses != 1 {
		t.Errorf("BadAccesses = %d", r.tr.Stats().BadAccesses)
	}
	gen := r.read(vt.RegConfigGeneration)
	irqs := r.irq.count()
	r.tr.ConfigChanged() // inactive: generation only
	if r.read(vt.RegConfigGeneration) == gen || r.irq.count() != irqs {
		t.Error("ConfigChanged before activation")
	}
	if err := vt.InitMMIO(r.tr, virtio.FeatureVersion1, r.drivers...); err != nil {
		t.Fatal(err)
	}
	gen = r.read(vt.RegConfigGeneration)
	r.tr.ConfigChanged()
	if r.read(vt.RegConfigGeneration) == gen || r.read(vt.RegInterruptStatus)&2 == 0 || r.irq.count() != irqs+1 {
		t.Error("ConfigChanged while active did not interrupt")
	}
}

// TestMMIOEndToEnd runs a guest-like driver against the transport and a
// device that echoes queue 0's readable bytes into its writable buffers
// when kicked through an MMIO exit.
func TestMMIOEndToEnd(t *testing.T) {
	r := newRig(t, rigOpts{noIO: true, notify: true, sizes: []uint16{64},
		features: virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc})
	var act virtio.Activation
	r.dev.onActivate = func(a virtio.Activation) { act = a }
	feats := virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc
	if err := vt.InitMMIO(r.tr, feats, r.drivers[0]); err != nil {
		t.Fatal(err)
	}
	d := r.drivers[0]
	echo := func() {
		q := act.Queues[0]
		for {
			c, err := q.Pop()
			if err != nil {
				act.Fail(err)
				return
			}
			if c == nil {
				if !q.EnableNotification() {
					return
				}
				continue
			}
			buf := make([]byte, c.ReadableLen)
			c.CopyReadable(buf)
			n := c.FillWritable(buf)
			q.Push(c.Head, uint32(n))
		}
	}
	for i := 0; i < 5; i++ {
		msg := []byte(fmt.Sprintf("packet %d", i))
		var head uint16
		var err error
		if i%2 == 0 {
			head, err = d.AddChain(vt.Readable(msg), vt.Writable(32))
		} else {
			head, err = d.AddIndirect(vt.Readable(msg), vt.Writable(32))
		}
		if err != nil {
			t.Fatal(err)
		}
		if d.Publish() {
			r.write(vt.RegQueueNotify, 0)
			echo()
			if act.Queues[0].NeedsInterrupt() {
				act.Interrupt.Signal(virtio.InterruptUsedBuffer)
			}
		}
		u, ok := d.GetUsed()
		if !ok || u.ID != uint32(head) || string(d.Written(head, u.Len)) != string(msg) {
			t.Fatalf("round %d: used %+v %v, data %q", i, u, ok, d.Written(head, u.Len))
		}
		d.SetUsedEvent(d.UsedIdx()) // interrupt me for the next one
	}
	if r.irq.count() != 5 || r.read(vt.RegInterruptStatus) != 1 {
		t.Errorf("%d interrupts, status %#x", r.irq.count(), r.read(vt.RegInterruptStatus))
	}
	// A hostile chain breaks the queue: NEEDS_RESET, the VMM carries on.
	d.AddHead(200)
	d.Publish()
	r.write(vt.RegQueueNotify, 0)
	echo()
	if r.read(vt.RegStatus)&virtio.StatusNeedsReset == 0 {
		t.Error("broken queue did not set NEEDS_RESET")
	}
}
