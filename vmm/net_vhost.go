package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/govmm/govmm/tap"
	"github.com/govmm/govmm/vhostnet"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
)

// Bounds on the wait for a vhost-user backend when the machine is
// created: a backend started just before govmm may not be listening yet
// (client mode); in server mode the backend is started after govmm.
const (
	vhostDialTimeout   = 5 * time.Second
	vhostAcceptTimeout = 5 * time.Minute
)

// vhostGroup is the machine's vhost attach path: one Attacher for every
// vhost-backed device, so that devices starting or stopping together
// (backend reconnects, machine shutdown) share one ioeventfd commit.
type vhostGroup struct {
	att     *vhostnet.Attacher
	trs     []*virtio.MMIOTransport
	devs    []*vhostnet.NetDevice
	closers []func() error // TAPs of kernel vhost-net devices
}

// vhostGroupFor returns the machine's group, creating it (and the closer
// that stops every vhost device in one detach) with the first device.
func (m *Machine) vhostGroupFor() (*vhostGroup, error) {
	if m.vhost != nil {
		return m.vhost, nil
	}
	att, err := vhostnet.NewAttacher(vhostnet.AttacherConfig{IoEvents: m.ioev, Logger: m.log})
	if err != nil {
		return nil, err
	}
	g := &vhostGroup{att: att}
	m.vhost = g
	m.devClosers = append(m.devClosers, g.close)
	return g, nil
}

// close resets every vhost device at once (one commit deregisters all
// their notifiers), then closes the devices, the attacher and the TAPs.
func (g *vhostGroup) close() error {
	var errs []error
	g.att.Batch(func() {
		for _, tr := range g.trs {
			errs = append(errs, tr.Close())
		}
	})
	for _, d := range g.devs {
		errs = append(errs, d.Close())
	}
	errs = append(errs, g.att.Close())
	for i := len(g.closers) - 1; i >= 0; i-- {
		errs = append(errs, g.closers[i]())
	}
	return errors.Join(errs...)
}

// addVhostNet creates a virtio-net device whose data queues a vhost
// backend serves: a vhost-user backend over nc.Socket, or kernel vhost-net
// over the queues of TAP nc.TAP. The VMM keeps the configuration space and
// the control queue; the queue notifiers are registered by the attach
// path at DRIVER_OK (all queues in one commit), and the backend signals
// used buffers straight into the device's irqfd.
func (m *Machine) addVhostNet(ctx context.Context, slot netSlot, nc NetConfig) error {
	g, err := m.vhostGroupFor()
	if err != nil {
		return err
	}
	log := m.log.With("net", slot.index)
	opts := vhostuser.Options{Logger: log}
	var conn vhostnet.Connector
	timeout := vhostDialTimeout
	switch nc.Backend {
	case NetVhostUser:
		if nc.Server {
			s, err := vhostnet.ListenUser(nc.Socket, opts)
			if err != nil {
				return err
			}
			conn = s
			timeout = vhostAcceptTimeout
			log.Info("waiting for the vhost-user backend to connect", "socket", nc.Socket)
		} else {
			conn = &vhostnet.UserClient{Path: nc.Socket, Opts: opts}
		}
	case NetVhostNet:
		// Say what is missing before touching the TAP.
		f, err := os.OpenFile(vhostnet.VhostNetPath, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("tap=%s,vhost=on: %w: %w", nc.TAP, vhostnet.ErrNoVhostNet, err)
		}
		f.Close()
		dev, err := tap.Open(nc.TAP, nc.QueuePairs, tap.Options{})
		if err != nil {
			return err
		}
		g.closers = append(g.closers, dev.Close)
		taps := make([]syscall.Conn, dev.NumQueues())
		for i := range taps {
			taps[i] = dev.Queue(i)
		}
		conn = &vhostnet.KernelConnector{TAP: nc.TAP, Taps: taps}
	default:
		return fmt.Errorf("backend %v is not a vhost backend", nc.Backend)
	}

	irq, err := m.newIRQFD(slot.irq)
	if err != nil {
		conn.Close()
		return fmt.Errorf("interrupt: %w", err)
	}
	var shared []vhostnet.MemoryRegion
	for _, r := range m.ram.Regions() {
		shared = append(shared, vhostnet.SharedRegion(r.GPA, r.Mem, m.ram.File(), r.Offset))
	}
	mem, err := m.ram.virtioMemory()
	if err != nil {
		conn.Close()
		return err
	}
	d, err := vhostnet.NewNetDeviceContext(ctx, vhostnet.NetConfig{
		Connector:      conn,
		Attacher:       g.att,
		MAC:            nc.MAC,
		QueuePairs:     nc.QueuePairs,
		Memory:         shared,
		Call:           irq.ev,
		ConnectTimeout: timeout,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	tr, err := virtio.NewMMIOTransport(d, virtio.MMIOConfig{
		Base:              slot.addr,
		Mem:               mem,
		IRQ:               irq,
		IoEvents:          m.ioev,
		ExternalNotifiers: true,
		UsedBufferAlways:  true,
		Logger:            log,
	})
	if err != nil {
		d.Close()
		return err
	}
	if err := m.mmio.Insert(slot.addr, virtio.MMIOWindowSize, tr); err != nil {
		d.Close()
		return fmt.Errorf("virtio-mmio window at %#x: %w", slot.addr, err)
	}
	g.trs = append(g.trs, tr)
	g.devs = append(g.devs, d)
	m.addNetStats(func() string { return fmt.Sprintf("net%d: %s", slot.index, d.Stats()) })
	if d.QueuePairs() < nc.QueuePairs {
		log.Warn("the vhost backend serves fewer queue pairs than asked for", "asked", nc.QueuePairs, "offered", d.QueuePairs())
	}
	log.Info("vhost virtio-net device", "backend", nc.Backend, "addr", fmt.Sprintf("%#x", slot.addr), "irq", slot.irq,
		"mac", d.MAC().String(), "queue_pairs", d.QueuePairs())
	return nil
}
