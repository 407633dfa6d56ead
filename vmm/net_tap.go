package vmm

import (
	"crypto/rand"
	"fmt"
	"net"

	"github.com/govmm/govmm/tap"
	"github.com/govmm/govmm/virtio"
)

// addTAPNet creates a virtio-net device whose queue pairs move packets
// through the queues of a (multi-queue) TAP: a virtio-mmio transport at
// slot.addr with an irqfd on slot.irq and ioeventfd kicks, and one worker
// goroutine per active queue pair (virtio.NetPairWorker) parked on the
// pair's kick eventfds and TAP queue fd. The TAP is opened, or created
// and then removed at Close, by package tap.
func (m *Machine) addTAPNet(slot netSlot, nc NetConfig) error {
	dev, err := tap.Open(nc.TAP, nc.QueuePairs, tap.Options{})
	if err != nil {
		return err
	}
	m.devClosers = append(m.devClosers, dev.Close)

	mac := nc.MAC
	if mac == nil {
		if mac, err = tapRandomMAC(); err != nil {
			return err
		}
	}
	mem, err := tapGuestMemory(m.ram)
	if err != nil {
		return err
	}
	mtu := dev.MTU()
	if mtu < 68 || mtu > 65535 {
		mtu = 0 // not worth offering
	}
	log := m.log.With("net", slot.index, "tap", dev.Name())
	nd, err := virtio.NewNet(virtio.NetDeviceConfig{
		MAC:        mac,
		MTU:        mtu,
		QueuePairs: nc.QueuePairs,
		Offloads:   tapOffloads(dev.SupportedOffloads()),
		Backend:    tapNetBackend{dev},
		Logger:     log,
	})
	if err != nil {
		return err
	}
	irq, err := m.newIRQFD(slot.irq)
	if err != nil {
		return fmt.Errorf("interrupt: %w", err)
	}
	tr, err := virtio.NewMMIOTransport(nd, virtio.MMIOConfig{
		Base:     slot.addr,
		Mem:      mem,
		IRQ:      irq,
		IoEvents: m.ioev,
		Logger:   log,
	})
	if err != nil {
		return err
	}
	if err := m.mmio.Insert(slot.addr, virtio.MMIOWindowSize, tr); err != nil {
		return fmt.Errorf("virtio-mmio window at %#x: %w", slot.addr, err)
	}
	// Closers run in reverse: the transport's Close (a device reset that
	// stops the workers and releases the notifiers) before the TAP's.
	m.devClosers = append(m.devClosers, tr.Close)
	m.addNetStats(func() string { return tapNetStatsLine(slot.index, dev, nd) })
	log.Info("virtio-net device", "addr", fmt.Sprintf("%#x", slot.addr), "irq", slot.irq,
		"mac", mac.String(), "queue_pairs", nc.QueuePairs, "tap_created", dev.Created())
	return nil
}

// tapNetStatsLine is the --stats line of a TAP-backed device: totals
// over all pairs. A pair's rate is its packets over the time between its
// first and last packet in that direction; the line sums the pairs'.
func tapNetStatsLine(index int, dev *tap.Device, nd *virtio.Net) string {
	s := nd.Stats()
	t := s.Total()
	var txPPS, rxPPS float64
	for _, p := range s.Pairs {
		if p.TXSpan > 0 {
			txPPS += float64(p.TXPackets) / p.TXSpan.Seconds()
		}
		if p.RXSpan > 0 {
			rxPPS += float64(p.RXPackets) / p.RXSpan.Seconds()
		}
	}
	return fmt.Sprintf("net%d: tap=%s pairs=%d tx_packets=%d tx_pps=%d rx_packets=%d rx_pps=%d tx_dropped=%d rx_dropped=%d "+
		"tx_kicks=%d rx_kicks=%d interrupts=%d ctrl_ok=%d ctrl_err=%d",
		index, dev.Name(), len(s.Pairs), t.TXPackets, uint64(txPPS), t.RXPackets, uint64(rxPPS),
		t.TXDropped, t.RXDropped, t.TXKicks, t.RXKicks, t.Interrupts, s.CtrlOK, s.CtrlErr)
}

// tapNetBackend adapts a TAP to virtio.NetBackend: pair i uses queue i.
type tapNetBackend struct{ dev *tap.Device }

func (b tapNetBackend) Pair(i int) virtio.PollablePacketIO { return b.dev.Queue(i) }

func (b tapNetBackend) SetOffloads(o virtio.NetOffloads) error {
	var t tap.Offload
	if o&virtio.NetOffloadCsum != 0 {
		t |= tap.OffloadCsum
	}
	if o&virtio.NetOffloadTSO4 != 0 {
		t |= tap.OffloadTSO4
	}
	if o&virtio.NetOffloadTSO6 != 0 {
		t |= tap.OffloadTSO6
	}
	return b.dev.SetOffload(t)
}

func (b tapNetBackend) EnablePair(i int, on bool) error {
	if !b.dev.MultiQueue() {
		return nil // one queue, always attached
	}
	return b.dev.Queue(i).SetAttached(on)
}

// tapOffloads maps what the TAP accepted to what the device offers.
func tapOffloads(t tap.Offload) virtio.NetOffloads {
	var o virtio.NetOffloads
	if t&tap.OffloadCsum != 0 {
		o |= virtio.NetOffloadCsum
	}
	if t&tap.OffloadTSO4 != 0 {
		o |= virtio.NetOffloadTSO4
	}
	if t&tap.OffloadTSO6 != 0 {
		o |= virtio.NetOffloadTSO6
	}
	return o
}

// tapGuestMemory describes guest RAM to the virtio layer.
func tapGuestMemory(ram *GuestRAM) (*virtio.GuestMemory, error) {
	var regions []virtio.Region
	for _, r := range ram.Regions() {
		regions = append(regions, virtio.Region{GPA: r.GPA, Mem: r.Mem})
	}
	mem, err := virtio.NewGuestMemory(regions...)
	if err != nil {
		return nil, fmt.Errorf("guest memory for virtio: %w", err)
	}
	return mem, nil
}

// tapRandomMAC returns a random locally administered unicast address.
func tapRandomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random MAC: %w", err)
	}
	mac[0] = mac[0]&^1 | 2
	return mac, nil
}
