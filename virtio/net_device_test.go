package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// sockBackend is a NetBackend over socket pairs that records what the
// device asked of it.
type sockBackend struct {
	ios        []*sockIO
	mu         sync.Mutex
	events     []string
	offloadErr error
}

func newSockBackend(t *testing.T, pairs int) *sockBackend {
	b := &sockBackend{}
	for i := 0; i < pairs; i++ {
		b.ios = append(b.ios, newSockIO(t))
	}
	return b
}

func (b *sockBackend) Pair(i int) virtio.PollablePacketIO { return b.ios[i] }

func (b *sockBackend) SetOffloads(o virtio.NetOffloads) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, fmt.Sprintf("offloads %d", o))
	return b.offloadErr
}

func (b *sockBackend) EnablePair(i int, on bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, fmt.Sprintf("pair %d %v", i, on))
	return nil
}

func (b *sockBackend) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.events, ", ")
}

// devEnv is a Net behind an MMIO transport, with one test driver per
// queue (index 2*pairs is the control queue).
type devEnv struct {
	mem     *vt.Memory
	be      *sockBackend
	n       *virtio.Net
	tr      *virtio.MMIOTransport
	irq     *countIRQ
	drivers []*vt.Driver
}

func newDevEnv(t *testing.T, cfg virtio.NetDeviceConfig, io virtio.IoEvents) *devEnv {
	t.Helper()
	mem, err := vt.NewMemory(0x100000, 8<<20)
	mustNoErr(t, err)
	e := &devEnv{mem: mem, be: newSockBackend(t, cfg.QueuePairs), irq: &countIRQ{}}
	cfg.Backend = e.be
	if e.n, err = virtio.NewNet(cfg); err != nil {
		t.Fatal(err)
	}
	if e.tr, err = virtio.NewMMIOTransport(e.n, virtio.MMIOConfig{Base: 0xd0000000, Mem: mem.Guest, IRQ: e.irq, IoEvents: io}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.tr.Close() })
	for _, max := range e.n.QueueMaxSizes() {
		d, err := vt.NewDriver(mem, min(max, 64))
		mustNoErr(t, err)
		e.drivers = append(e.drivers, d)
	}
	return e
}

// ctrl queues a control command (class, command, data, one ack byte).
func ctrl(t *testing.T, d *vt.Driver, class, cmd byte, data []byte) uint16 {
	t.Helper()
	bufs := []vt.Buffer{vt.Readable([]byte{class, cmd})}
	if len(data) > 0 {
		bufs = append(bufs, vt.Readable(data))
	}
	h, err := d.AddChain(append(bufs, vt.Writable(1))...)
	mustNoErr(t, err)
	return h
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestNetConfigSpace(t *testing.T) {
	e := newDevEnv(t, virtio.NetDeviceConfig{MAC: devMAC, MTU: 1400, QueuePairs: 4}, nil)
	read := func(off uint64, n int) []byte {
		b := make([]byte, n)
		e.tr.Read(virtiotestConfig+off, b)
		return b
	}
	for _, tc := range []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0, 6, devMAC},
		{0, 4, devMAC[:4]},
		{5, 1, devMAC[5:]},
		{6, 2, le16(1)},     // status: link up
		{8, 2, le16(4)},     // max_virtqueue_pairs
		{10, 2, le16(1400)}, // mtu
		{8, 4, append(le16(4), le16(1400)...)},
		{11, 4, []byte{0x05, 0, 0, 0}}, // runs past the end: zeros
		{12, 4, []byte{0, 0, 0, 0}},
		{0xe00, 4, []byte{0, 0, 0, 0}},
	} {
		if got := read(tc.off, tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("config[%d:+%d] = % x, want % x", tc.off, tc.n, got, tc.want)
		}
	}
	// Writes are ignored.
	e.tr.Write(virtiotestConfig, []byte{1, 2, 3, 4, 5, 6})
	if got := read(0, 6); !bytes.Equal(got, devMAC) {
		t.Errorf("MAC after a config write: % x", got)
	}
	if e.n.DeviceID() != virtio.DeviceIDNet || vt.ReadReg(e.tr, vt.RegDeviceID) != 1 {
		t.Error("device ID")
	}
}

const virtiotestConfig = vt.RegConfig

func TestNetOfferedFeatures(t *testing.T) {
	base := virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc | virtio.NetFStatus |
		virtio.NetFMrgRxbuf | virtio.NetFCtrlVQ | virtio.NetFCtrlRX | virtio.NetFCtrlRXExtra | virtio.NetFCtrlMACAddr
	csum := virtio.NetFCsum | virtio.NetFGuestCsum
	for _, tc := range []struct {
		name string
		cfg  virtio.NetDeviceConfig
		want uint64
	}{
		{"minimal", virtio.NetDeviceConfig{QueuePairs: 1}, base},
		{"mac mtu", virtio.NetDeviceConfig{QueuePairs: 1, MAC: devMAC, MTU: 1500}, base | virtio.NetFMAC | virtio.NetFMTU},
		{"multiqueue", virtio.NetDeviceConfig{QueuePairs: 32}, base | virtio.NetFMQ},
		{"csum", virtio.NetDeviceConfig{QueuePairs: 1, Offloads: virtio.NetOffloadCsum}, base | csum},
		{"tso without csum", virtio.NetDeviceConfig{QueuePairs: 1, Offloads: virtio.NetOffloadTSO4}, base},
		{"all offloads", virtio.NetDeviceConfig{QueuePairs: 1, Offloads: virtio.NetOffloadCsum | virtio.NetOffloadTSO4 | virtio.NetOffloadTSO6},
			base | csum | virtio.NetFHostTSO4 | virtio.NetFGuestTSO4 | virtio.NetFHostTSO6 | virtio.NetFGuestTSO6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Backend = &sockBackend{}
			n, err := virtio.NewNet(tc.cfg)
			mustNoErr(t, err)
			if got := n.Features(); got != tc.want {
				t.Errorf("features %#x, want %#x (diff %#x)", got, tc.want, got^tc.want)
			}
			sizes := n.QueueMaxSizes()
			if len(sizes) != 2*tc.cfg.QueuePairs+1 || sizes[0] != virtio.NetQueueSize || sizes[len(sizes)-1] == 0 {
				t.Errorf("queue sizes %v", sizes)
			}
		})
	}
}

func TestNewNetErrors(t *testing.T) {
	be := &sockBackend{}
	for _, cfg := range []virtio.NetDeviceConfig{
		{QueuePairs: 1},
		{QueuePairs: 0, Backend: be},
		{QueuePairs: virtio.NetMaxQueuePairs + 1, Backend: be},
		{QueuePairs: 1, Backend: be, MAC: net.HardwareAddr{1, 2, 3}},
		{QueuePairs: 1, Backend: be, MTU: 67},
		{QueuePairs: 1, Backend: be, QueueSize: 100},
	} {
		if _, err := virtio.NewNet(cfg); err == nil {
			t.Errorf("NewNet(%+v) succeeded", cfg)
		}
	}
}

// The driver negotiates MQ, the control queue brings a second pair up,
// which sends what was queued on it; bad commands get ERR; a packet from
// the host reaches pair 0. Everything the driver writes is in place
// before DRIVER_OK and read back after the reset, so the test never
// touches guest memory while the device's goroutines run.
func TestNetDeviceEndToEnd(t *testing.T) {
	t.Cleanup(testutil.CheckFDLeaks(t))
	goroutines := runtime.NumGoroutine()
	e := newDevEnv(t, virtio.NetDeviceConfig{MAC: devMAC, QueuePairs: 2, Offloads: virtio.NetOffloadCsum}, nil)
	rx0, tx1, cq := e.drivers[0], e.drivers[3], e.drivers[4]
	features := fV1 | fMrg | fEvtIdx | virtio.NetFCtrlVQ | virtio.NetFMQ | virtio.NetFCtrlRX | virtio.NetFMAC

	rxHeads := []uint16{}
	for i := 0; i < 4; i++ {
		h, err := rx0.AddChain(vt.Writable(2048))
		mustNoErr(t, err)
		rxHeads = append(rxHeads, h)
	}
	rx0.Publish()
	f := frame(bcastMAC, 100, 7)
	_, err := tx1.AddChain(vt.Readable(netHdr(0, 0, 0)), vt.Readable(f))
	mustNoErr(t, err)
	tx1.Publish()
	type cmd struct {
		class, cmd byte
		data       []byte
		ack        byte
	}
	cmds := []cmd{
		{virtio.NetCtrlMQ, virtio.NetCtrlMQPairsSet, le16(2), virtio.NetCtrlOK},
		{virtio.NetCtrlMQ, virtio.NetCtrlMQPairsSet, le16(3), virtio.NetCtrlErr},   // more than max
		{virtio.NetCtrlMQ, virtio.NetCtrlMQPairsSet, le16(0), virtio.NetCtrlErr},   // below min
		{virtio.NetCtrlMQ, virtio.NetCtrlMQPairsSet, []byte{2}, virtio.NetCtrlErr}, // short
		{9, 0, nil, virtio.NetCtrlErr},                                             // unknown class
		{virtio.NetCtrlRX, virtio.NetCtrlRXPromisc, []byte{0}, virtio.NetCtrlOK},
		{virtio.NetCtrlRX, virtio.NetCtrlRXNoBcast, []byte{1}, virtio.NetCtrlErr}, // CTRL_RX_EXTRA not negotiated
		{virtio.NetCtrlMAC, virtio.NetCtrlMACTableSet, append(append(le32(1), devMAC...), le32(0)...), virtio.NetCtrlOK},
		{virtio.NetCtrlMAC, virtio.NetCtrlMACTableSet, le32(1), virtio.NetCtrlErr}, // truncated table
		{virtio.NetCtrlMAC, virtio.NetCtrlMACAddrSet, devMAC, virtio.NetCtrlErr},   // CTRL_MAC_ADDR not negotiated
		{virtio.NetCtrlVLAN, 0, le16(5), virtio.NetCtrlErr},
	}
	var heads []uint16
	for _, c := range cmds {
		heads = append(heads, ctrl(t, cq, c.class, c.cmd, c.data))
	}
	cq.Publish()
	// A frame to our MAC: accepted whatever the filter state when it
	// arrives.
	r := frame(devMAC, 300, 8)
	e.be.ios[0].hostSend(t, append(netHdr(0, 0, 0), r...))

	mustNoErr(t, vt.InitMMIO(e.tr, features, e.drivers...))
	testutil.WaitFor(t, 5*time.Second, "the control commands", func() bool {
		s := e.n.Stats()
		return s.CtrlOK+s.CtrlErr == uint64(len(cmds))
	})
	if got := e.be.ios[1].hostRecv(t); !bytes.Equal(got, append(netHdr(0, 0, 0), f...)) {
		t.Errorf("pair 1 sent % x", got)
	}
	testutil.WaitFor(t, 5*time.Second, "the received packet", func() bool { return e.n.Stats().Pairs[0].RXPackets == 1 })
	s := e.n.Stats()
	if s.ActivePairs != 2 || s.CtrlOK != 3 || s.Pairs[1].TXPackets != 1 {
		t.Errorf("stats %+v", s)
	}
	if got, want := e.be.log(), "offloads 0, pair 0 true, pair 1 false, pair 1 true"; got != want {
		t.Errorf("backend calls %q, want %q", got, want)
	}

	vt.WriteReg(e.tr, vt.RegStatus, 0) // reset: every goroutine stops
	for i, c := range cmds {
		if got := cq.Written(heads[i], 1); len(got) != 1 || got[0] != c.ack {
			t.Errorf("command %d (%d/%d) ack % x, want %d", i, c.class, c.cmd, got, c.ack)
		}
	}
	u := used(rx0)
	if len(u) != 1 || u[0].Len != uint32(12+len(r)) || !bytes.Equal(rx0.Written(rxHeads[0], u[0].Len), append(netHdr(0, 0, 1), r...)) {
		t.Errorf("pair 0 receive: used %v", u)
	}
	if s := e.n.Stats(); s.ActivePairs != 0 || s.Pairs[1].TXPackets != 1 {
		t.Errorf("stats after reset %+v", s)
	}
	testutil.WaitFor(t, 5*time.Second, "the device goroutines to end", func() bool { return runtime.NumGoroutine() <= goroutines })
}

// MAC_ADDR_SET changes the configuration space until the next reset.
func TestNetDeviceMACAddrSet(t *testing.T) {
	e := newDevEnv(t, virtio.NetDeviceConfig{MAC: devMAC, QueuePairs: 1}, nil)
	cq := e.drivers[2]
	newMAC := []byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	ctrl(t, cq, virtio.NetCtrlMAC, virtio.NetCtrlMACAddrSet, newMAC)
	cq.Publish()
	mustNoErr(t, vt.InitMMIO(e.tr, fV1|virtio.NetFCtrlVQ|virtio.NetFCtrlMACAddr|virtio.NetFMAC, e.drivers...))
	testutil.WaitFor(t, 5*time.Second, "MAC_ADDR_SET", func() bool { return e.n.Stats().CtrlOK == 1 })
	cfgMAC := make([]byte, 6)
	e.tr.Read(vt.RegConfig, cfgMAC)
	if !bytes.Equal(cfgMAC, newMAC) || !bytes.Equal(e.n.MAC(), newMAC) {
		t.Errorf("config MAC % x, device MAC %v, want % x", cfgMAC, e.n.MAC(), newMAC)
	}
	vt.WriteReg(e.tr, vt.RegStatus, 0)
	e.tr.Read(vt.RegConfig, cfgMAC)
	if !bytes.Equal(cfgMAC, devMAC) {
		t.Errorf("config MAC after reset % x, want % x", cfgMAC, devMAC)
	}
}

// Feature sets that break the specification's dependencies fail at
// DRIVER_OK (DEVICE_NEEDS_RESET); the device works after a reset.
func TestNetDeviceFeatureDependencies(t *testing.T) {
	e := newDevEnv(t, virtio.NetDeviceConfig{QueuePairs: 2, Offloads: virtio.NetOffloadCsum | virtio.NetOffloadTSO4}, nil)
	for _, f := range []uint64{
		virtio.NetFGuestTSO4,
		virtio.NetFHostTSO4,
		virtio.NetFMQ,
		virtio.NetFCtrlRX,
		virtio.NetFCtrlRXExtra | virtio.NetFCtrlVQ,
		virtio.NetFCtrlMACAddr,
	} {
		err := vt.InitMMIO(e.tr, fV1|f, e.drivers...)
		if err == nil || virtio.StatusNeedsReset&e.tr.Status() == 0 {
			t.Errorf("features %#x accepted (status %#x)", f, e.tr.Status())
		}
	}
	mustNoErr(t, vt.InitMMIO(e.tr, fV1|virtio.NetFGuestTSO4|virtio.NetFGuestCsum, e.drivers...))
	// The refused activations never reached the backend.
	if got, want := e.be.log(), "offloads 3, pair 0 true, pair 1 false"; got != want {
		t.Errorf("backend calls %q, want %q", got, want)
	}
	e.be.offloadErr = errors.New("TUNSETOFFLOAD refused")
	if err := vt.InitMMIO(e.tr, fV1, e.drivers...); err == nil {
		t.Error("activation succeeded although the backend refused the offloads")
	}
}

// A hostile chain sets DEVICE_NEEDS_RESET with a configuration interrupt;
// the transport keeps answering and the device works again after reset.
func TestNetDeviceBrokenQueueNeedsReset(t *testing.T) {
	e := newDevEnv(t, virtio.NetDeviceConfig{QueuePairs: 1}, nil)
	tx := e.drivers[1]
	a, _ := tx.Mem.Alloc(64, 8)
	tx.SetDesc(0, vt.Desc{Addr: a, Len: 64, Flags: virtio.DescFNext, Next: 0}) // a loop
	tx.AddHead(0)
	tx.Publish()
	mustNoErr(t, vt.InitMMIO(e.tr, fV1, e.drivers...))
	testutil.WaitFor(t, 5*time.Second, "DEVICE_NEEDS_RESET", func() bool { return e.tr.Status()&virtio.StatusNeedsReset != 0 })
	if vt.ReadReg(e.tr, vt.RegInterruptStatus)&virtio.InterruptConfigChange == 0 || e.irq.count() == 0 {
		t.Error("no configuration-change interrupt")
	}
	if e.tr.Stats().DeviceErrors == 0 {
		t.Error("device error not counted")
	}

	// Reset and start again with fresh rings: traffic flows.
	vt.WriteReg(e.tr, vt.RegStatus, 0)
	for i := range e.drivers {
		d, err := vt.NewDriver(e.mem, e.drivers[i].Size)
		mustNoErr(t, err)
		e.drivers[i] = d
	}
	f := frame(bcastMAC, 64, 1)
	_, err := e.drivers[1].AddChain(vt.Readable(append(netHdr(0, 0, 0), f...)))
	mustNoErr(t, err)
	e.drivers[1].Publish()
	mustNoErr(t, vt.InitMMIO(e.tr, fV1, e.drivers...))
	if got := e.be.ios[0].hostRecv(t); !bytes.Equal(got[12:], f) {
		t.Errorf("host got % x", got)
	}
	if e.tr.Status()&virtio.StatusNeedsReset != 0 {
		t.Error("still NEEDS_RESET after a reset")
	}
}

// Kicks reach the workers both as MMIO exits (QueueNotifier) and through
// the transport's ioeventfds.
func TestNetDeviceKicks(t *testing.T) {
	t.Run("mmio exit", func(t *testing.T) {
		e := newDevEnv(t, virtio.NetDeviceConfig{QueuePairs: 1}, nil)
		mustNoErr(t, vt.InitMMIO(e.tr, fV1, e.drivers...))
		vt.WriteReg(e.tr, vt.RegQueueNotify, 1)
		vt.WriteReg(e.tr, vt.RegQueueNotify, 0)
		testutil.WaitFor(t, 5*time.Second, "the kicks", func() bool {
			s := e.n.Stats().Pairs[0]
			return s.TXKicks == 1 && s.RXKicks == 1
		})
	})
	t.Run("ioeventfd", func(t *testing.T) {
		io := newFakeIoEvents()
		e := newDevEnv(t, virtio.NetDeviceConfig{QueuePairs: 1}, io)
		mustNoErr(t, vt.InitMMIO(e.tr, fV1, e.drivers...))
		var tx *kvm.EventFD
		io.mu.Lock()
		for _, r := range io.committed {
			if r.Datamatch == 1 {
				tx = r.Event
			}
		}
		io.mu.Unlock()
		if tx == nil {
			t.Fatal("no ioeventfd for queue 1")
		}
		tx.Signal()
		tx.Signal()
		testutil.WaitFor(t, 5*time.Second, "the kicks", func() bool { return e.n.Stats().Pairs[0].TXKicks == 2 })
	})
}

// Without MQ, queue 2 is the control queue even on a device with more
// pairs: it answers commands (VQ_PAIRS_SET refused), and a driver that
// also readies queue 3 gets no second pair.
func TestNetDeviceControlQueueWithoutMQ(t *testing.T) {
	e := newDevEnv(t, virtio.NetDeviceConfig{MAC: devMAC, QueuePairs: 2}, nil)
	cq := e.drivers[2]
	promisc := ctrl(t, cq, virtio.NetCtrlRX, virtio.NetCtrlRXPromisc, []byte{1})
	pairs := ctrl(t, cq, virtio.NetCtrlMQ, virtio.NetCtrlMQPairsSet, le16(1))
	cq.Publish()
	d3 := e.drivers[3]
	_, err := d3.AddChain(vt.Readable(append(netHdr(0, 0, 0), frame(bcastMAC, 60, 1)...)))
	mustNoErr(t, err)
	d3.Publish()
	features := fV1 | virtio.NetFCtrlVQ | virtio.NetFCtrlRX
	mustNoErr(t, vt.InitMMIO(e.tr, features, e.drivers[0], e.drivers[1], cq, d3))
	testutil.WaitFor(t, 5*time.Second, "the control commands", func() bool {
		s := e.n.Stats()
		return s.CtrlOK+s.CtrlErr == 2
	})
	if s := e.n.Stats(); s.ActivePairs != 1 || s.CtrlOK != 1 {
		t.Errorf("stats %+v, want one active pair and one OK", s)
	}
	vt.WriteReg(e.tr, vt.RegStatus, 0)
	if got := cq.Written(promisc, 1); len(got) != 1 || got[0] != virtio.NetCtrlOK {
		t.Errorf("PROMISC ack % x", got)
	}
	if got := cq.Written(pairs, 1); len(got) != 1 || got[0] != virtio.NetCtrlErr {
		t.Errorf("VQ_PAIRS_SET without MQ ack % x", got)
	}
	if u := used(d3); len(u) != 0 {
		t.Errorf("queue 3 was served without MQ: %v", u)
	}
	e.be.ios[1].hostNothing(t)
}

func TestRandomMAC(t *testing.T) {
	a, err := virtio.RandomMAC()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := virtio.RandomMAC()
	if len(a) != 6 || a[0]&1 != 0 || a[0]&2 == 0 || a.String() == b.String() {
		t.Errorf("MACs %v %v: want distinct locally administered unicast addresses", a, b)
	}
}
