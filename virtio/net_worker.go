package virtio

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// epollSet is a private epoll instance whose own fd sits in the Go
// runtime's poller: wait parks the goroutine (no OS thread blocked, no
// polling loop) until one of the registered fds is ready, and returns
// their tags.
type epollSet struct {
	f   *os.File
	rc  syscall.RawConn
	evs [8]unix.EpollEvent
}

func newEpollSet(name string) (*epollSet, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1 for %s: %w", name, err)
	}
	// Non-blocking before NewFile, so the runtime registers it with its
	// poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll for %s: %w", name, err)
	}
	return &epollSet{f: f, rc: rc}, nil
}

// add registers fd under tag; edge-triggered if edge.
func (s *epollSet) add(fd int, tag int32, edge bool) error {
	if fd < 0 {
		return fmt.Errorf("epoll add tag %d: %w", tag, unix.EBADF)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: tag}
	if edge {
		ev.Events |= unix.EPOLLET
	}
	var err error
	if cerr := s.rc.Control(func(efd uintptr) { err = unix.EpollCtl(int(efd), unix.EPOLL_CTL_ADD, fd, &ev) }); cerr != nil {
		return fmt.Errorf("epoll add tag %d: %w", tag, cerr)
	}
	if err != nil {
		return fmt.Errorf("epoll_ctl add tag %d: %w", tag, err)
	}
	return nil
}

// addConn registers c's fd.
func (s *epollSet) addConn(c syscall.Conn, tag int32, edge bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("epoll add tag %d: %w", tag, err)
	}
	var aerr error
	if err := rc.Control(func(fd uintptr) { aerr = s.add(int(fd), tag, edge) }); err != nil {
		return fmt.Errorf("epoll add tag %d: %w", tag, err)
	}
	return aerr
}

// wait returns the ready tags; with block it parks until there is one.
// The returned slice is valid until the next call.
func (s *epollSet) wait(block bool) ([]unix.EpollEvent, error) {
	var n int
	var werr error
	err := s.rc.Read(func(efd uintptr) bool {
		for {
			n, werr = unix.EpollWait(int(efd), s.evs[:], 0)
			if werr != unix.EINTR {
				break
			}
		}
		return werr != nil || n > 0 || !block
	})
	if err != nil {
		return nil, fmt.Errorf("epoll wait: %w", err)
	}
	if werr != nil {
		return nil, fmt.Errorf("epoll_wait: %w", werr)
	}
	return s.evs[:n], nil
}

func (s *epollSet) close() error { return s.f.Close() }

// eventFDInterrupt adapts an eventfd (a vhost-user call fd or an irqfd)
// to Interrupt.
type eventFDInterrupt struct{ ev *kvm.EventFD }

func (i eventFDInterrupt) Signal(uint32) error { return i.ev.Signal() }

// EventFDInterrupt returns an Interrupt that signals ev whatever the
// reason: the used-buffer notification of a vhost-user back-end (its
// call eventfd) or of a transport-less test.
func EventFDInterrupt(ev *kvm.EventFD) Interrupt { return eventFDInterrupt{ev} }

// Tags of a worker's epoll set.
const (
	tagStop int32 = iota
	tagTXKick
	tagRXKick
	tagIO
)

// NetPairWorkerConfig describes what a NetPairWorker waits on.
type NetPairWorkerConfig struct {
	// Pair is the data path; its PacketIO must be a PollablePacketIO.
	Pair *NetQueuePair
	// RXKick and TXKick are the queues' kick eventfds (ioeventfds, or
	// vhost-user kick fds). The worker drains and counts them; the
	// caller keeps ownership and must not close them before Stop
	// returns.
	RXKick, TXKick *kvm.EventFD
	// OnError is called once, from the worker goroutine, when the pair
	// stops on an error (a broken queue, a failed interrupt): the VMM
	// passes Activation.Fail, a vhost-user back-end its error path. The
	// worker then exits; Stop is still needed to release it.
	OnError func(error)
	// Logger receives worker diagnostics. nil: discard.
	Logger *slog.Logger
	// OnIdle, if set, is called from the worker goroutine each time it
	// has nothing left to do and is about to wait. Tests use it to take
	// turns with the worker on guest memory.
	OnIdle func()
}

// NetPairWorker is one goroutine that runs a NetQueuePair: it parks on a
// private epoll set holding the two kick eventfds, the PacketIO's fd
// (edge-triggered) and a stop eventfd, and calls ProcessTX and ProcessRX
// as they become due. It never polls and uses no timer.
type NetPairWorker struct {
	cfg  NetPairWorkerConfig
	ep   *epollSet
	stop *kvm.EventFD
	done chan struct{}
	once sync.Once
}

// StartNetPairWorker starts a worker. Its first pass looks at the queues
// and the PacketIO without waiting for a notification (chains or packets
// may already be waiting).
func StartNetPairWorker(cfg NetPairWorkerConfig) (_ *NetPairWorker, err error) {
	if cfg.Pair == nil || cfg.RXKick == nil || cfg.TXKick == nil {
		return nil, errors.New("start net queue pair worker: pair and kicks are required")
	}
	io, ok := cfg.Pair.IO().(PollablePacketIO)
	if !ok {
		return nil, fmt.Errorf("start net queue pair %d worker: packet endpoint %T cannot be polled", cfg.Pair.Index(), cfg.Pair.IO())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &NetPairWorker{cfg: cfg, done: make(chan struct{})}
	if w.stop, err = kvm.NewEventFD(); err != nil {
		return nil, fmt.Errorf("start net queue pair %d worker: %w", cfg.Pair.Index(), err)
	}
	if w.ep, err = newEpollSet(fmt.Sprintf("virtio-net-pair%d", cfg.Pair.Index())); err != nil {
		w.stop.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			w.ep.close()
			w.stop.Close()
		}
	}()
	if err := w.ep.add(w.stop.Fd(), tagStop, false); err != nil {
		return nil, err
	}
	if err := w.ep.add(cfg.TXKick.Fd(), tagTXKick, false); err != nil {
		return nil, err
	}
	if err := w.ep.add(cfg.RXKick.Fd(), tagRXKick, false); err != nil {
		return nil, err
	}
	if err := w.ep.addConn(io, tagIO, true); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

func (w *NetPairWorker) run() {
	defer close(w.done)
	p := w.cfg.Pair
	txDue, rxDue := true, true
	fail := func(err error) {
		w.cfg.Logger.Warn("virtio-net queue pair stopped", "pair", p.Index(), "err", err)
		if w.cfg.OnError != nil {
			w.cfg.OnError(err)
		}
	}
	// Guest memory may be a file a vhost-user frontend shares with us; if
	// the peer truncates it, touching the mapping raises SIGBUS. Make that
	// a broken queue pair (the device goes to NEEDS_RESET) rather than a
	// crash of the whole process.
	debug.SetPanicOnFault(true)
	defer func() {
		if r := recover(); r != nil {
			// Under SetPanicOnFault a memory fault panics with a
			// runtime.Error that has an Addr method; anything else is a
			// bug and keeps crashing.
			fault, ok := r.(interface {
				runtime.Error
				Addr() uintptr
			})
			if !ok {
				panic(r)
			}
			fail(fmt.Errorf("queue pair %d: guest memory access at %#x faulted: %w", p.Index(), fault.Addr(), fault))
		}
	}()
	for {
		var err error
		if txDue {
			if txDue, err = p.ProcessTX(); err != nil {
				fail(err)
				return
			}
		}
		if rxDue {
			if rxDue, err = p.ProcessRX(); err != nil {
				fail(err)
				return
			}
		}
		// With work left over, only look for events (a stop above all);
		// otherwise park.
		park := !txDue && !rxDue
		if park && w.cfg.OnIdle != nil {
			w.cfg.OnIdle()
		}
		evs, err := w.ep.wait(park)
		if err != nil {
			fail(err)
			return
		}
		for _, ev := range evs {
			switch ev.Fd {
			case tagStop:
				return
			case tagTXKick:
				n, _ := w.cfg.TXKick.Drain()
				p.CountKicks(0, n)
				txDue = true
			case tagRXKick:
				n, _ := w.cfg.RXKick.Drain()
				p.CountKicks(n, 0)
				rxDue = true
			case tagIO:
				rxDue = true
			}
		}
	}
}

// Stop ends the worker and waits for its goroutine to return; nothing
// touches the pair, its queues or the kicks afterwards. Idempotent.
func (w *NetPairWorker) Stop() {
	w.once.Do(func() {
		if err := w.stop.Signal(); err != nil {
			w.cfg.Logger.Warn("virtio-net worker stop", "pair", w.cfg.Pair.Index(), "err", err)
		}
		<-w.done
		w.ep.close()
		w.stop.Close()
	})
}

// Done is closed when the worker goroutine has returned (after Stop, or
// on its own after an error).
func (w *NetPairWorker) Done() <-chan struct{} { return w.done }
