package vmm

import (
	"context"
	"fmt"

	"github.com/govmm/govmm/boot"
)

// setupNet creates the virtio-net devices of cfg.Net, one virtio-mmio
// slot each, and describes every slot to the guest on its command line
// (virtio_mmio.device=4K@ADDR:IRQ, which Linux's
// VIRTIO_MMIO_CMDLINE_DEVICES and the tiny kernels both parse).
func (m *Machine) setupNet(ctx context.Context) error {
	for i, nc := range m.cfg.Net {
		slot := netSlot{index: i, addr: boot.VirtioMMIOAddr(i), irq: boot.VirtioIRQ(i)}
		var err error
		switch nc.Backend {
		case NetTAP:
			err = m.addTAPNet(slot, nc)
		case NetVhostNet, NetVhostUser:
			err = m.addVhostNet(ctx, slot, nc)
		default:
			err = fmt.Errorf("unknown backend %v", nc.Backend)
		}
		if err != nil {
			return fmt.Errorf("net%d (%s): %w", i, nc.Backend, err)
		}
		m.cmdline += fmt.Sprintf(" virtio_mmio.device=4K@%#x:%d", slot.addr, slot.irq)
	}
	return nil
}

// netSlot is where device index i lives: its MMIO window and its GSI.
type netSlot struct {
	index int
	addr  uint64
	irq   uint32
}

// NetStats returns one line per net device that keeps statistics, e.g.
// "net0: notifiers=64 attach_commits=1 attach_ms=1.9 detach_commits=1
// detach_ms=2.4", totals over the run. Devices register a reporter with
// addNetStats when they are created.
func (m *Machine) NetStats() []string {
	out := make([]string, 0, len(m.netStats))
	for _, f := range m.netStats {
		out = append(out, f())
	}
	return out
}

func (m *Machine) addNetStats(f func() string) { m.netStats = append(m.netStats, f) }
