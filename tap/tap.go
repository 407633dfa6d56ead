package tap

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Limits of a Linux TAP.
const (
	// MaxQueues is the most queues a multi-queue TAP can have
	// (MAX_TAP_QUEUES).
	MaxQueues = 256
	// MaxNameLen is the longest interface name (IFNAMSIZ - 1).
	MaxNameLen = unix.IFNAMSIZ - 1
	// VnetHdrSize is the default vnet header size: struct
	// virtio_net_hdr_v1 (virtio_net_hdr_mrg_rxbuf), what a virtio 1.x
	// device exchanges with its driver.
	VnetHdrSize = 12
)

// Offload is a set of TUNSETOFFLOAD flags: the offloads the reader of the
// TAP accepts in packets the kernel hands it (TUN_F_*).
type Offload uint32

const (
	// OffloadCsum: packets may carry a partial checksum (NEEDS_CSUM).
	OffloadCsum Offload = tunFCsum
	// OffloadTSO4: TCP over IPv4 segmentation offload (needs OffloadCsum).
	OffloadTSO4 Offload = tunFTSO4
	// OffloadTSO6: TCP over IPv6 segmentation offload (needs OffloadCsum).
	OffloadTSO6 Offload = tunFTSO6
	// OffloadTSOECN: TSO with the ECN bit.
	OffloadTSOECN Offload = tunFTSOECN
	// OffloadUFO: UDP fragmentation offload (kernels since 4.14 refuse it).
	OffloadUFO Offload = tunFUFO
)

// ErrBadArgument is wrapped by Open's errors for a bad name or queue
// count (nothing was touched on the host).
var ErrBadArgument = errors.New("invalid TAP argument")

// Options tune Open.
type Options struct {
	// VnetHdrSize is the vnet header size set with TUNSETVNETHDRSZ; 0
	// means VnetHdrSize (12).
	VnetHdrSize int
}

// Device is an open TAP interface: its queue fds and, if Open created the
// interface, the duty to remove it. Its methods are safe for concurrent
// use.
type Device struct {
	name       string
	index      int
	mtu        int
	created    bool
	multiQueue bool
	supported  Offload
	nl         *netlink.Handle // bound to the namespace Open ran in
	queues     []*Queue

	mu     sync.Mutex
	closed bool
}

// Queue is one queue fd of a TAP. ReadPacket and WritePacket do not block
// and may run concurrently with each other; use SyscallConn to wait for
// the fd in an epoll set.
type Queue struct {
	dev   *Device
	index int
	f     *os.File
	rc    syscall.RawConn

	mu       sync.Mutex
	attached bool
}

// ValidateName checks an interface name the way the kernel will: 1 to
// MaxNameLen bytes, no '/', ':' or white space, not "." or "..".
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("TAP name is empty: %w", ErrBadArgument)
	case len(name) > MaxNameLen:
		return fmt.Errorf("TAP name %q is %d bytes, more than %d: %w", name, len(name), MaxNameLen, ErrBadArgument)
	case name == "." || name == "..", strings.ContainsAny(name, "/: \t\n\r\v\f"):
		return fmt.Errorf("TAP name %q is not a valid interface name: %w", name, ErrBadArgument)
	}
	return nil
}

// Open attaches to the TAP called name with the given number of queues,
// creating it if no interface of that name exists in the calling
// thread's network namespace.
//
// An existing interface must be a TAP (not a TUN or anything else); it is
// used as it is (addresses, MTU, up or down), except that IFF_VNET_HDR is
// turned on and the vnet header size set: a single-queue TAP admits only
// queues == 1, a multi-queue one up to MaxQueues. A missing one is created
// multi-queue with IFF_VNET_HDR, not persistent, and brought up; Created
// reports it and Close removes it.
//
// Every queue starts attached. The vnet header size is
// opts.VnetHdrSize and no offload is enabled (SetOffload).
func Open(name string, queues int, opts Options) (_ *Device, err error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("open TAP: %w", err)
	}
	if queues < 1 || queues > MaxQueues {
		return nil, fmt.Errorf("open TAP %s: %d queues, want 1 to %d: %w", name, queues, MaxQueues, ErrBadArgument)
	}
	hdr := opts.VnetHdrSize
	if hdr == 0 {
		hdr = VnetHdrSize
	}

	// Everything namespace-dependent (the netlink socket, /dev/net/tun)
	// must happen in the caller's namespace: stay on this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open TAP %s: netlink: %w", name, err)
	}
	d := &Device{name: name, nl: nl}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	if err := d.attachOrCreate(queues); err != nil {
		return nil, err
	}
	link, err := nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up TAP %s: %w", name, err)
	}
	d.index, d.mtu = link.Attrs().Index, link.Attrs().MTU
	if d.created {
		if err := nl.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set TAP %s up: %w", name, err)
		}
	}
	if err := d.SetVnetHdrSize(hdr); err != nil {
		return nil, err
	}
	d.supported = d.probeOffloads()
	if err := d.SetOffload(0); err != nil {
		return nil, err
	}
	return d, nil
}

// attachOrCreate opens the queues, creating the interface if it is
// missing.
func (d *Device) attachOrCreate(queues int) error {
	const base = iffTAP | iffNoPI | iffVnetHdr
	for try := 0; try < 2; try++ {
		link, err := d.nl.LinkByName(d.name)
		var notFound netlink.LinkNotFoundError
		switch {
		case err == nil:
			mq, err := checkExistingTAP(d.name, link, queues)
			if err != nil {
				return err
			}
			flags := uint16(base)
			if mq {
				flags |= iffMultiQueue
			}
			d.multiQueue = mq
			return d.openQueues(queues, flags, false)
		case errors.As(err, &notFound):
			// Create it: IFF_TUN_EXCL makes the first TUNSETIFF fail
			// with EBUSY if someone created the name meanwhile; then
			// attach to theirs.
			d.multiQueue = true
			err := d.openQueues(queues, base|iffMultiQueue, true)
			if errors.Is(err, unix.EBUSY) && len(d.queues) == 0 {
				continue
			}
			if err == nil {
				d.created = true
			}
			return err
		default:
			return fmt.Errorf("look up TAP %s: %w", d.name, err)
		}
	}
	return fmt.Errorf("open TAP %s: created and removed by someone else while opening: %w", d.name, unix.EBUSY)
}

// checkExistingTAP checks that link can serve queues queues and reports
// whether it is multi-queue.
func checkExistingTAP(name string, link netlink.Link, queues int) (bool, error) {
	t, ok := link.(*netlink.Tuntap)
	if !ok {
		return false, fmt.Errorf("open TAP %s: the interface exists and is a %q, not a TAP: %w", name, link.Type(), ErrBadArgument)
	}
	if t.Mode != netlink.TUNTAP_MODE_TAP {
		return false, fmt.Errorf("open TAP %s: the interface exists and is a TUN (layer 3), not a TAP: %w", name, ErrBadArgument)
	}
	mq := t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0
	if !mq && queues > 1 {
		return false, fmt.Errorf("open TAP %s: it is a single-queue TAP and %d queues were asked for (create it with multi_queue): %w", name, queues, ErrBadArgument)
	}
	return mq, nil
}

// openQueues opens queues fds with TUNSETIFF. With create, the first one
// carries IFF_TUN_EXCL.
func (d *Device) openQueues(queues int, flags uint16, create bool) error {
	for i := 0; i < queues; i++ {
		f := flags
		if create && i == 0 {
			f |= iffTunExcl
		}
		q, err := d.openQueue(i, f)
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}
	return nil
}

func (d *Device) openQueue(i int, flags uint16) (*Queue, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun for %s queue %d: %w", d.name, i, err)
	}
	ifr, err := unix.NewIfreq(d.name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", d.name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, tunSetIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s queue %d (flags %#x): %w", d.name, i, flags, err)
	}
	// Wrap the fd while it is still blocking so the runtime does not
	// register it with its poller (the workers epoll it themselves),
	// then make it non-blocking for ReadPacket/WritePacket.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("tap:%s:%d", d.name, i))
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("set %s queue %d non-blocking: %w", d.name, i, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s queue %d: %w", d.name, i, err)
	}
	return &Queue{dev: d, index: i, f: f, rc: rc, attached: true}, nil
}

// probeOffloads finds the offloads TUNSETOFFLOAD accepts, most capable
// set first.
func (d *Device) probeOffloads() Offload {
	for _, o := range []Offload{
		OffloadCsum | OffloadTSO4 | OffloadTSO6,
		OffloadCsum | OffloadTSO4,
		OffloadCsum,
	} {
		if d.SetOffload(o) == nil {
			return o
		}
	}
	return 0
}

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// Index returns the interface index.
func (d *Device) Index() int { return d.index }

// MTU returns the interface MTU when Open ran.
func (d *Device) MTU() int { return d.mtu }

// Created reports whether Open created the interface (and Close removes
// it).
func (d *Device) Created() bool { return d.created }

// MultiQueue reports whether the TAP is a multi-queue one (queues can be
// detached).
func (d *Device) MultiQueue() bool { return d.multiQueue }

// SupportedOffloads returns the checksum and TSO offloads the kernel
// accepted when Open probed them (a subset of OffloadCsum, OffloadTSO4,
// OffloadTSO6).
func (d *Device) SupportedOffloads() Offload { return d.supported }

// NumQueues returns the number of queues.
func (d *Device) NumQueues() int { return len(d.queues) }

// Queue returns queue i (0 <= i < NumQueues).
func (d *Device) Queue(i int) *Queue { return d.queues[i] }

// control runs fn with the fd of an attached queue (device-wide ioctls
// fail on a detached one).
func (d *Device) control(op string, fn func(fd int) error) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return fmt.Errorf("%s %s: %w", op, d.name, os.ErrClosed)
	}
	for _, q := range d.queues {
		q.mu.Lock()
		attached := q.attached
		q.mu.Unlock()
		if !attached {
			continue
		}
		var err error
		if cerr := q.rc.Control(func(fd uintptr) { err = fn(int(fd)) }); cerr != nil {
			return fmt.Errorf("%s %s: %w", op, d.name, cerr)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, d.name, err)
		}
		return nil
	}
	return fmt.Errorf("%s %s: no attached queue: %w", op, d.name, unix.EBADFD)
}

// SetOffload sets the offloads the kernel may use in packets it hands
// the queues (TUNSETOFFLOAD). 0 makes it complete checksums and segment
// everything itself.
func (d *Device) SetOffload(o Offload) error {
	return d.control(fmt.Sprintf("TUNSETOFFLOAD %#x", uint32(o)), func(fd int) error {
		return unix.IoctlSetInt(fd, tunSetOffload, int(o))
	})
}

// SetVnetHdrSize sets the size of the vnet header in front of every
// packet (TUNSETVNETHDRSZ; at least 10).
func (d *Device) SetVnetHdrSize(n int) error {
	return d.control(fmt.Sprintf("TUNSETVNETHDRSZ %d", n), func(fd int) error {
		return unix.IoctlSetPointerInt(fd, tunSetVnetHdrSz, n)
	})
}

// Close closes every queue and, if Open created the interface, removes
// it. It is idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	var errs []error
	for _, q := range d.queues {
		if err := q.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s queue %d: %w", d.name, q.index, err))
		}
	}
	if d.created && d.index != 0 {
		// A TAP that is not persistent disappears with its last queue;
		// remove it if something made it persistent (or still holds a
		// queue, like a vhost-net backend).
		link, err := d.nl.LinkByIndex(d.index)
		var notFound netlink.LinkNotFoundError
		switch {
		case err == nil && link.Attrs().Name == d.name:
			if err := d.nl.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("remove TAP %s: %w", d.name, err))
			}
		case err != nil && !errors.As(err, &notFound):
			errs = append(errs, fmt.Errorf("look up TAP %s to remove it: %w", d.name, err))
		}
	}
	if d.nl != nil {
		d.nl.Close()
	}
	return errors.Join(errs...)
}

// Index returns the queue's index.
func (q *Queue) Index() int { return q.index }

// ReadPacket reads one packet (vnet header and frame) into buf without
// blocking. With no packet waiting it returns an error matching
// syscall.EAGAIN (errors.Is). A packet longer than buf is truncated.
func (q *Queue) ReadPacket(buf []byte) (int, error) {
	var n int
	var err error
	if cerr := q.rc.Control(func(fd uintptr) {
		for {
			n, err = unix.Read(int(fd), buf)
			if err != unix.EINTR {
				return
			}
		}
	}); cerr != nil {
		return 0, fmt.Errorf("read %s queue %d: %w", q.dev.name, q.index, cerr)
	}
	if err == unix.EAGAIN {
		return 0, unix.EAGAIN // the common case: no allocation
	}
	if err != nil {
		return 0, fmt.Errorf("read %s queue %d: %w", q.dev.name, q.index, err)
	}
	return n, nil
}

// WritePacket writes one packet, the concatenation of pkt (vnet header
// first), with one writev. It does not keep pkt.
func (q *Queue) WritePacket(pkt [][]byte) error {
	var n int
	var err error
	if cerr := q.rc.Control(func(fd uintptr) {
		for {
			n, err = unix.Writev(int(fd), pkt)
			if err != unix.EINTR {
				return
			}
		}
	}); cerr != nil {
		return fmt.Errorf("write %s queue %d: %w", q.dev.name, q.index, cerr)
	}
	if err != nil {
		return fmt.Errorf("write %s queue %d: %w", q.dev.name, q.index, err)
	}
	total := 0
	for _, b := range pkt {
		total += len(b)
	}
	if n != total {
		return fmt.Errorf("write %s queue %d: wrote %d of %d bytes: %w", q.dev.name, q.index, n, total, unix.EIO)
	}
	return nil
}

// SyscallConn gives access to the queue's fd (for epoll, or for
// VHOST_NET_SET_BACKEND) without handing out ownership.
func (q *Queue) SyscallConn() (syscall.RawConn, error) { return q.rc, nil }

// Attached reports whether the queue is attached (receives packets).
func (q *Queue) Attached() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.attached
}

// SetAttached attaches or detaches the queue (TUNSETQUEUE): the kernel
// steers packets only to attached queues, and writes to a detached queue
// fail. A single-queue TAP cannot detach its queue.
func (q *Queue) SetAttached(on bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.attached == on {
		return nil
	}
	op := "detach"
	flags := uint16(iffDetachQueue)
	if on {
		op, flags = "attach", iffAttachQueue
	}
	if !q.dev.multiQueue {
		return fmt.Errorf("TUNSETQUEUE %s queue %d %s: single-queue TAP: %w", q.dev.name, q.index, op, unix.EINVAL)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return fmt.Errorf("TUNSETQUEUE %s queue %d %s: %w", q.dev.name, q.index, op, err)
	}
	ifr.SetUint16(flags)
	var ierr error
	if cerr := q.rc.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), tunSetQueue, ifr) }); cerr != nil {
		ierr = cerr
	}
	if ierr != nil {
		return fmt.Errorf("TUNSETQUEUE %s queue %d %s: %w", q.dev.name, q.index, op, ierr)
	}
	q.attached = on
	return nil
}
