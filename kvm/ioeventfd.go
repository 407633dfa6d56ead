package kvm

import "fmt"

// Space selects the bus an ioeventfd listens on.
type Space uint8

const (
	// SpaceMMIO is guest-physical memory-mapped I/O.
	SpaceMMIO Space = iota
	// SpacePIO is x86 port I/O.
	SpacePIO
)

func (s Space) String() string {
	switch s {
	case SpaceMMIO:
		return "mmio"
	case SpacePIO:
		return "pio"
	}
	return fmt.Sprintf("space(%d)", uint8(s))
}

// Ioeventfd describes one KVM_IOEVENTFD registration: a guest write of Len
// bytes at Addr in Space (whose value equals Datamatch, when HasDatamatch)
// signals Event instead of exiting to userspace. Len 0 matches any access
// length (KVM_CAP_IOEVENTFD_ANY_LENGTH) and cannot carry a datamatch.
type Ioeventfd struct {
	Space        Space
	Addr         uint64
	Len          uint32
	HasDatamatch bool
	Datamatch    uint64
	Event        *EventFD
}

func (e Ioeventfd) String() string {
	if e.HasDatamatch {
		return fmt.Sprintf("%s %#x/%d data=%#x fd=%d", e.Space, e.Addr, e.Len, e.Datamatch, e.Event.Fd())
	}
	return fmt.Sprintf("%s %#x/%d any fd=%d", e.Space, e.Addr, e.Len, e.Event.Fd())
}

// IoeventfdAssigner is the kernel side of ioeventfd registration. *VM
// implements it with the KVM_IOEVENTFD ioctl; tests use a fake that
// implements the kernel's rules.
type IoeventfdAssigner interface {
	AssignIoeventfd(e Ioeventfd) error
	DeassignIoeventfd(e Ioeventfd) error
}
