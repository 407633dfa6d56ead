package vhostnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet/vhostuser"
)

// UserBackend is a Backend over one vhost-user connection, this process
// being the front-end. Transport and protocol failures (peer gone,
// malformed or late reply) come back wrapped in ErrDisconnected; a
// backend's refusal of a request (a REPLY_ACK failure status) comes back
// as a *vhostuser.BackendError. Disconnected is closed as soon as the peer
// hangs up, even while no request is in flight.
type UserBackend struct {
	fe   *vhostuser.Frontend
	name string

	hup       chan struct{}
	hupOnce   sync.Once
	stop      *kvm.EventFD // wakes the watcher on Close
	watchFD   int          // a dup of the socket, polled for hang-up
	watchDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var (
	_ Backend = (*UserBackend)(nil)
	_ Watcher = (*UserBackend)(nil)
)

// NewUserBackend wraps an established vhost-user connection (the
// UserBackend owns conn from here on, also on error).
func NewUserBackend(conn *net.UnixConn, opts vhostuser.Options) (*UserBackend, error) {
	name := "vhost-user"
	if a := conn.RemoteAddr(); a != nil && a.String() != "" {
		name += " " + a.String()
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("vhost-user connection: %w", err)
	}
	dup := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || dupErr != nil {
		conn.Close()
		return nil, fmt.Errorf("vhost-user connection: dup socket: %w", errors.Join(err, dupErr))
	}
	stop, err := kvm.NewEventFD()
	if err != nil {
		unix.Close(dup)
		conn.Close()
		return nil, fmt.Errorf("vhost-user connection: %w", err)
	}
	b := &UserBackend{
		fe:        vhostuser.NewFrontend(conn, opts),
		name:      name,
		hup:       make(chan struct{}),
		stop:      stop,
		watchFD:   dup,
		watchDone: make(chan struct{}),
	}
	go b.watch()
	return b, nil
}

// watch closes b.hup when the peer hangs up (POLLRDHUP/POLLHUP/POLLERR on
// the socket), or returns when Close signals b.stop. It polls a duplicate
// of the socket so that it never consumes a reply the Frontend waits for.
func (b *UserBackend) watch() {
	defer close(b.watchDone)
	fds := []unix.PollFd{
		{Fd: int32(b.watchFD), Events: unix.POLLRDHUP},
		{Fd: int32(b.stop.Fd()), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents != 0 {
			b.down()
			return
		}
	}
}

// Disconnected is closed when the peer hangs up, or when a request failed
// at the connection level (the Frontend then dropped the connection
// itself, which a peer that stopped reading would never notice).
func (b *UserBackend) Disconnected() <-chan struct{} { return b.hup }

func (b *UserBackend) down() { b.hupOnce.Do(func() { close(b.hup) }) }

// Frontend returns the underlying protocol front-end (for requests outside
// the Backend interface, such as GET_CONFIG).
func (b *UserBackend) Frontend() *vhostuser.Frontend { return b.fe }

func (b *UserBackend) String() string { return b.name }

// Close closes the connection. It is idempotent.
func (b *UserBackend) Close() error {
	b.closeOnce.Do(func() {
		// A Frontend that failed already closed its connection.
		if err := b.fe.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			b.closeErr = err
		}
		b.stop.Signal()
		<-b.watchDone
		unix.Close(b.watchFD)
		b.stop.Close()
	})
	return b.closeErr
}

// wrap classifies a Frontend error: connection-level failures wrap
// ErrDisconnected, refusals and local checks are returned as they are.
func (b *UserBackend) wrap(err error) error {
	if err == nil || !connectionError(err) {
		return err
	}
	b.down()
	return fmt.Errorf("%w: %w", ErrDisconnected, err)
}

// connectionError reports whether err means the vhost-user connection is
// unusable (as opposed to a refusal by the backend or a local check).
func connectionError(err error) bool {
	var be *vhostuser.BackendError
	if errors.As(err, &be) || errors.Is(err, vhostuser.ErrNotNegotiated) {
		return false
	}
	var pe *vhostuser.ProtocolError
	var ne net.Error
	return errors.Is(err, vhostuser.ErrBroken) || errors.Is(err, vhostuser.ErrClosed) ||
		errors.As(err, &pe) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

func (b *UserBackend) SetOwner() error { return b.wrap(b.fe.SetOwner()) }

func (b *UserBackend) GetFeatures() (uint64, error) {
	f, err := b.fe.GetFeatures()
	return f, b.wrap(err)
}

func (b *UserBackend) SetFeatures(features uint64) error {
	return b.wrap(b.fe.SetFeatures(features))
}

func (b *UserBackend) GetProtocolFeatures() (vhostuser.ProtocolFeatures, error) {
	p, err := b.fe.GetProtocolFeatures()
	return p, b.wrap(err)
}

func (b *UserBackend) SetProtocolFeatures(p vhostuser.ProtocolFeatures) error {
	return b.wrap(b.fe.SetProtocolFeatures(p))
}

// QueuePairs returns GET_QUEUE_NUM when MQ was negotiated (read, as QEMU
// does for net devices, as the number of queue pairs), else 1.
func (b *UserBackend) QueuePairs() (int, error) {
	if !b.fe.ProtocolFeatures().Has(vhostuser.ProtocolMQ) {
		return 1, nil
	}
	n, err := b.fe.GetQueueNum()
	if err != nil {
		return 0, b.wrap(err)
	}
	if n == 0 {
		return 0, fmt.Errorf("vhost-user GET_QUEUE_NUM: backend reports 0 queues")
	}
	if n > vhostuser.MaxVringIndex+1 {
		n = vhostuser.MaxVringIndex + 1
	}
	return int(n), nil
}

func (b *UserBackend) SetMemTable(regions []MemoryRegion) error {
	rs := make([]vhostuser.SharedMemoryRegion, len(regions))
	for i, r := range regions {
		if r.File == nil {
			return fmt.Errorf("vhost-user SET_MEM_TABLE: region %d (guest %#x) has no backing file to share", i, r.GPA)
		}
		rs[i] = vhostuser.SharedMemoryRegion{
			MemoryRegion: vhostuser.MemoryRegion{GuestPhysAddr: r.GPA, Size: r.Size, UserAddr: r.UserAddr, MmapOffset: r.FileOffset},
			File:         r.File,
		}
	}
	return b.wrap(b.fe.SetMemTable(rs))
}

func checkIndex(req string, index uint32) error {
	if index > vhostuser.MaxVringIndex {
		return fmt.Errorf("vhost-user %s: queue %d: %w (at most %d queues)", req, index, ErrUnsupported, vhostuser.MaxVringIndex+1)
	}
	return nil
}

func (b *UserBackend) SetVringNum(index, num uint32) error {
	return b.wrap(b.fe.SetVringNum(index, num))
}

func (b *UserBackend) SetVringAddr(index uint32, a VringAddr) error {
	return b.wrap(b.fe.SetVringAddr(vhostuser.VringAddr{Index: index, Desc: a.Desc, Used: a.Used, Avail: a.Avail}))
}

func (b *UserBackend) SetVringBase(index, base uint32) error {
	return b.wrap(b.fe.SetVringBase(index, base))
}

func (b *UserBackend) GetVringBase(index uint32) (uint32, error) {
	v, err := b.fe.GetVringBase(index)
	return v, b.wrap(err)
}

func (b *UserBackend) SetVringKick(index uint32, ev *kvm.EventFD) error {
	if err := checkIndex("SET_VRING_KICK", index); err != nil {
		return err
	}
	return b.wrap(b.fe.SetVringKick(index, ev))
}

func (b *UserBackend) SetVringCall(index uint32, ev *kvm.EventFD) error {
	if err := checkIndex("SET_VRING_CALL", index); err != nil {
		return err
	}
	return b.wrap(b.fe.SetVringCall(index, ev))
}

func (b *UserBackend) SetVringEnable(index uint32, enable bool) error {
	return b.wrap(b.fe.SetVringEnable(index, enable))
}

// UserClient is a Connector that dials a vhost-user backend listening on
// a Unix socket (govmm's default mode).
type UserClient struct {
	Path string
	Opts vhostuser.Options
}

// Connect dials the socket once.
func (c *UserClient) Connect(ctx context.Context) (Backend, error) {
	d := net.Dialer{Timeout: c.Opts.Timeout}
	if d.Timeout == 0 {
		d.Timeout = vhostuser.DefaultTimeout
	}
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return nil, fmt.Errorf("vhost-user: connect to %s: %w", c.Path, err)
	}
	return NewUserBackend(conn.(*net.UnixConn), c.Opts)
}

func (c *UserClient) Reconnects() bool { return true }
func (c *UserClient) String() string   { return "vhost-user " + c.Path }
func (c *UserClient) Close() error     { return nil }

// UserServer is a Connector that listens on a Unix socket and waits for a
// vhost-user backend to connect (the "server" option).
type UserServer struct {
	path string
	opts vhostuser.Options
	ln   *net.UnixListener
	mu   sync.Mutex // one Connect at a time

	closeOnce sync.Once
	closeErr  error
}

// ListenUser creates the socket at path.
func ListenUser(path string, opts vhostuser.Options) (*UserServer, error) {
	ln, err := vhostuser.ListenUnix(path)
	if err != nil {
		return nil, err
	}
	return &UserServer{path: path, opts: opts, ln: ln}, nil
}

// Connect waits for the next backend to connect, or for ctx to end.
func (s *UserServer) Connect(ctx context.Context) (Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ln.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("vhost-user: accept on %s: %w", s.path, err)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		s.ln.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	conn, err := s.ln.AcceptUnix()
	if !stop() {
		// ctx ended: wait until the deadline is set, so that clearing it
		// at the next Connect cannot be undone.
		<-fired
		if err == nil {
			conn.Close()
		}
		return nil, fmt.Errorf("vhost-user: accept on %s: %w", s.path, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("vhost-user: accept on %s: %w", s.path, err)
	}
	return NewUserBackend(conn, s.opts)
}

func (s *UserServer) Reconnects() bool { return true }
func (s *UserServer) String() string   { return "vhost-user server " + s.path }

// Close stops listening and removes the socket file. Idempotent.
func (s *UserServer) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.ln.Close() })
	return s.closeErr
}
