package vmm

import (
	"fmt"

	"github.com/govmm/govmm/tap"
	"github.com/govmm/govmm/vhostnet"
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
		if mac, err = virtio.RandomMAC(); err != nil {
			return err
		}
	}
	mem, err := m.ram.virtioMemory()
	if err != nil {
		return err
	}
	mtu := dev.MTU()
	if mtu < 68 || mtu > 65535 {
		mtu = 0 // not worth offering
	}
	log := m.log.With("net", slot.index, "tap", dev.Name())
	be := vhostnet.NewTAPBackend(dev)
	nd, err := virtio.NewNet(virtio.NetDeviceConfig{
		MAC:        mac,
		MTU:        mtu,
		QueuePairs: nc.QueuePairs,
		Offloads:   be.Offloads(),
		Backend:    be,
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
