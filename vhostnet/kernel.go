package vhostnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet/vhostuser"
)

// VhostNetPath is the kernel vhost-net device.
const VhostNetPath = "/dev/vhost-net"

// KernelNet is a Backend over the kernel's vhost-net: one /dev/vhost-net
// fd per queue pair, each serving that pair's RX (its vring 0) and TX (its
// vring 1) and bound, when the pair is enabled, to its own queue of a
// multi-queue TAP with VHOST_NET_SET_BACKEND. Global queue index q maps to
// fd q/2, vring q%2.
//
// The TAP queues must carry a virtio-net header of the size the guest
// uses (TUNSETVNETHDRSZ 12 for VERSION_1), so KernelNet never asks the
// kernel to add one (VHOST_NET_F_VIRTIO_NET_HDR is not offered).
type KernelNet struct {
	mu     sync.Mutex
	fds    []int          // one per pair; -1 once closed
	taps   []syscall.Conn // the caller's TAP queues, one per pair
	closed bool
}

var _ Backend = (*KernelNet)(nil)

// OpenKernelNet opens one vhost-net fd per TAP queue in taps (queue pair
// i is served by taps[i], a *tap.Queue or an *os.File). The caller keeps
// ownership of taps and keeps them open while the KernelNet is in use. A missing /dev/vhost-net
// returns an error wrapping ErrNoVhostNet.
func OpenKernelNet(taps []syscall.Conn) (*KernelNet, error) {
	if len(taps) == 0 {
		return nil, errors.New("vhost-net: no TAP queues")
	}
	k := &KernelNet{taps: taps}
	for i := range taps {
		if taps[i] == nil {
			k.Close()
			return nil, fmt.Errorf("vhost-net: TAP queue %d is nil", i)
		}
		fd, err := unix.Open(VhostNetPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			k.Close()
			return nil, fmt.Errorf("open %s for queue pair %d: %w: %w", VhostNetPath, i, ErrNoVhostNet, err)
		}
		k.fds = append(k.fds, fd)
	}
	return k, nil
}

// Close closes every vhost-net fd (the kernel stops the rings and drops
// the TAP bindings). It is idempotent.
func (k *KernelNet) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	var errs []error
	for i, fd := range k.fds {
		if fd >= 0 {
			if err := unix.Close(fd); err != nil {
				errs = append(errs, fmt.Errorf("close vhost-net fd of pair %d: %w", i, err))
			}
			k.fds[i] = -1
		}
	}
	return errors.Join(errs...)
}

// each runs op on every fd, naming the ioctl and pair on failure.
func (k *KernelNet) each(name string, op func(fd int) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("vhost-net %s: %w", name, os.ErrClosed)
	}
	for i, fd := range k.fds {
		if err := op(fd); err != nil {
			return fmt.Errorf("vhost-net %s (pair %d): %w", name, i, err)
		}
	}
	return nil
}

// one runs op on the fd of global queue index, with the vring index local
// to that fd.
func (k *KernelNet) one(name string, index uint32, op func(fd int, local uint32) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("vhost-net %s queue %d: %w", name, index, os.ErrClosed)
	}
	pair := int(index / vhostNetQueuesPerFD)
	if pair >= len(k.fds) {
		return fmt.Errorf("vhost-net %s queue %d: %w (%d queue pairs)", name, index, ErrUnsupported, len(k.fds))
	}
	if err := op(k.fds[pair], index%vhostNetQueuesPerFD); err != nil {
		return fmt.Errorf("vhost-net %s queue %d: %w", name, index, err)
	}
	return nil
}

func (k *KernelNet) SetOwner() error {
	return k.each("VHOST_SET_OWNER", func(fd int) error { return vhostIoctlNone(fd, vhostSetOwner) })
}

func (k *KernelNet) GetFeatures() (uint64, error) {
	var f uint64
	err := k.one("VHOST_GET_FEATURES", 0, func(fd int, _ uint32) error {
		return vhostIoctlPtr(fd, vhostGetFeatures, &f)
	})
	// The kernel adds the header itself only on request; govmm's TAPs
	// carry it, and logging is for migration: offer neither.
	return f &^ (vhostNetFVirtioHdr | vhostFLogAll), err
}

func (k *KernelNet) SetFeatures(features uint64) error {
	return k.each("VHOST_SET_FEATURES", func(fd int) error {
		f := features
		return vhostIoctlPtr(fd, vhostSetFeatures, &f)
	})
}

// GetProtocolFeatures returns 0: kernel vhost has no protocol features.
func (k *KernelNet) GetProtocolFeatures() (vhostuser.ProtocolFeatures, error) { return 0, nil }

// SetProtocolFeatures accepts only the empty set.
func (k *KernelNet) SetProtocolFeatures(p vhostuser.ProtocolFeatures) error {
	if p != 0 {
		return fmt.Errorf("vhost-net: protocol features %v: %w", p, ErrUnsupported)
	}
	return nil
}

// QueuePairs is the number of vhost-net fds (TAP queues).
func (k *KernelNet) QueuePairs() (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.fds), nil
}

func (k *KernelNet) SetMemTable(regions []MemoryRegion) error {
	if len(regions) == 0 {
		return errors.New("vhost-net VHOST_SET_MEM_TABLE: no regions")
	}
	buf := encodeVhostMemory(regions)
	return k.each("VHOST_SET_MEM_TABLE", func(fd int) error { return vhostSetMemTableIoctl(fd, buf) })
}

func (k *KernelNet) SetVringNum(index, num uint32) error {
	return k.one("VHOST_SET_VRING_NUM", index, func(fd int, local uint32) error {
		return vhostIoctlPtr(fd, vhostSetVringNum, &vringState{Index: local, Num: num})
	})
}

func (k *KernelNet) SetVringAddr(index uint32, a VringAddr) error {
	return k.one("VHOST_SET_VRING_ADDR", index, func(fd int, local uint32) error {
		return vhostIoctlPtr(fd, vhostSetVringAddr, &vringAddr{Index: local, Desc: a.Desc, Used: a.Used, Avail: a.Avail})
	})
}

func (k *KernelNet) SetVringBase(index, base uint32) error {
	return k.one("VHOST_SET_VRING_BASE", index, func(fd int, local uint32) error {
		return vhostIoctlPtr(fd, vhostSetVringBase, &vringState{Index: local, Num: base})
	})
}

// GetVringBase unbinds the queue from its TAP queue
// (VHOST_NET_SET_BACKEND -1), which stops it, and returns its base.
func (k *KernelNet) GetVringBase(index uint32) (uint32, error) {
	var st vringState
	err := k.one("VHOST_GET_VRING_BASE", index, func(fd int, local uint32) error {
		if err := vhostIoctlPtr(fd, vhostNetSetBackend, &vringFile{Index: local, FD: vhostVringFDUnbind}); err != nil {
			return fmt.Errorf("unbind TAP queue: %w", err)
		}
		st = vringState{Index: local}
		return vhostIoctlPtr(fd, vhostGetVringBase, &st)
	})
	return st.Num, err
}

func eventFD(ev *kvm.EventFD) (int32, error) {
	if ev == nil {
		return vhostVringFDUnbind, nil
	}
	fd := ev.Fd()
	if fd < 0 {
		return 0, kvm.ErrClosed
	}
	return int32(fd), nil
}

func (k *KernelNet) setVringFile(name string, req uintptr, index uint32, ev *kvm.EventFD) error {
	return k.one(name, index, func(fd int, local uint32) error {
		efd, err := eventFD(ev)
		if err != nil {
			return err
		}
		return vhostIoctlPtr(fd, req, &vringFile{Index: local, FD: efd})
	})
}

func (k *KernelNet) SetVringKick(index uint32, ev *kvm.EventFD) error {
	return k.setVringFile("VHOST_SET_VRING_KICK", vhostSetVringKick, index, ev)
}

func (k *KernelNet) SetVringCall(index uint32, ev *kvm.EventFD) error {
	return k.setVringFile("VHOST_SET_VRING_CALL", vhostSetVringCall, index, ev)
}

// SetVringEnable binds (or unbinds) the queue's vring to its pair's TAP
// queue with VHOST_NET_SET_BACKEND. With several queues, the TAP queue
// itself is attached before the RX vring is bound and detached after it is
// unbound (when it has SetAttached, as *tap.Queue does), so that the
// kernel steers no packet to a pair the guest does not use.
func (k *KernelNet) SetVringEnable(index uint32, enable bool) error {
	pair := index / vhostNetQueuesPerFD
	steer := func(on bool) error {
		if index%vhostNetQueuesPerFD != 0 || len(k.taps) < 2 || int(pair) >= len(k.taps) {
			return nil
		}
		if a, ok := k.taps[pair].(interface{ SetAttached(bool) error }); ok {
			if err := a.SetAttached(on); err != nil {
				return fmt.Errorf("vhost-net queue %d: TAP queue: %w", index, err)
			}
		}
		return nil
	}
	if enable {
		if err := steer(true); err != nil {
			return err
		}
	}
	err := k.one("VHOST_NET_SET_BACKEND", index, func(fd int, local uint32) error {
		backend := int32(vhostVringFDUnbind)
		if enable {
			rc, err := k.taps[index/vhostNetQueuesPerFD].SyscallConn()
			if err != nil {
				return err
			}
			var tfd int32 = -1
			if err := rc.Control(func(raw uintptr) { tfd = int32(raw) }); err != nil {
				return err
			}
			backend = tfd
		}
		return vhostIoctlPtr(fd, vhostNetSetBackend, &vringFile{Index: local, FD: backend})
	})
	if err != nil || enable {
		return err
	}
	return steer(false)
}

// KernelConnector opens kernel vhost-net for the given TAP queues. It
// connects once: kernel vhost-net does not go away by itself.
type KernelConnector struct {
	TAP  string
	Taps []syscall.Conn // e.g. *tap.Queue

	mu   sync.Mutex
	used bool
}

func (c *KernelConnector) Connect(ctx context.Context) (Backend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used {
		return nil, fmt.Errorf("vhost-net: reconnect: %w", ErrUnsupported)
	}
	k, err := OpenKernelNet(c.Taps)
	if err != nil {
		return nil, err
	}
	c.used = true
	return k, nil
}

func (c *KernelConnector) Reconnects() bool { return false }
func (c *KernelConnector) String() string   { return "vhost-net tap " + c.TAP }
func (c *KernelConnector) Close() error     { return nil }
