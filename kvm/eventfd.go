package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// EventFD owns one Linux eventfd. It is the notifier type used for
// ioeventfds (guest kick -> host), irqfds (host -> guest interrupt) and the
// kick/call fds handed to vhost backends. Bookkeeping never keys on the fd
// number (the kernel reuses numbers as soon as one is closed); the ioeventfd
// address space gives each registration its own never-reused ID.
type EventFD struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

// NewEventFD creates a non-blocking, close-on-exec eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &EventFD{fd: fd}, nil
}

// EventFDFromFile adopts an eventfd received from elsewhere (for example
// over SCM_RIGHTS). The caller must not use f afterwards.
//
// The copy is made non-blocking whatever the sender chose: a peer that
// hands over a blocking eventfd with its counter near the maximum could
// otherwise park a worker in write(2) forever, and with it every Stop
// that waits for that worker.
func EventFDFromFile(f *os.File) (*EventFD, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("dup eventfd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make eventfd non-blocking: %w", err)
	}
	return &EventFD{fd: fd}, nil
}

// ErrClosed is returned by operations on a closed EventFD.
var ErrClosed = errors.New("eventfd closed")

// Fd returns the raw descriptor, for passing to the kernel (ioctls,
// SCM_RIGHTS, epoll). It returns -1 after Close. The EventFD keeps
// ownership: callers must not close it.
func (e *EventFD) Fd() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return -1
	}
	return e.fd
}

// Signal adds 1 to the counter, waking any reader (and, for an irqfd,
// injecting the interrupt). A counter already at its maximum (EAGAIN)
// means a notification is pending anyway, so that is not an error.
func (e *EventFD) Signal() error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	for {
		_, err := unix.Write(e.fd, b[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return fmt.Errorf("eventfd write: %w", err)
		}
		return nil
	}
}

// Drain reads and resets the counter without blocking. It returns 0 when
// nothing was pending.
func (e *EventFD) Drain() (uint64, error) {
	var b [8]byte
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, ErrClosed
	}
	for {
		_, err := unix.Read(e.fd, b[:])
		switch err {
		case nil:
			return binary.NativeEndian.Uint64(b[:]), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, fmt.Errorf("eventfd read: %w", err)
		}
	}
}

// Close releases the descriptor. It is idempotent.
func (e *EventFD) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if err := unix.Close(e.fd); err != nil {
		return fmt.Errorf("close eventfd: %w", err)
	}
	return nil
}
