package kvm

import "fmt"

// ExitReason is kvm_run.exit_reason.
type ExitReason uint32

// Exit reasons govmm handles (values from <linux/kvm.h>).
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
)

func (r ExitReason) String() string {
	switch r {
	case ExitUnknown:
		return "KVM_EXIT_UNKNOWN"
	case ExitException:
		return "KVM_EXIT_EXCEPTION"
	case ExitIO:
		return "KVM_EXIT_IO"
	case ExitHypercall:
		return "KVM_EXIT_HYPERCALL"
	case ExitDebug:
		return "KVM_EXIT_DEBUG"
	case ExitHLT:
		return "KVM_EXIT_HLT"
	case ExitMMIO:
		return "KVM_EXIT_MMIO"
	case ExitIRQWindowOpen:
		return "KVM_EXIT_IRQ_WINDOW_OPEN"
	case ExitShutdown:
		return "KVM_EXIT_SHUTDOWN"
	case ExitFailEntry:
		return "KVM_EXIT_FAIL_ENTRY"
	case ExitIntr:
		return "KVM_EXIT_INTR"
	case ExitNMI:
		return "KVM_EXIT_NMI"
	case ExitInternalError:
		return "KVM_EXIT_INTERNAL_ERROR"
	case ExitSystemEvent:
		return "KVM_EXIT_SYSTEM_EVENT"
	case ExitIOAPICEOI:
		return "KVM_EXIT_IOAPIC_EOI"
	}
	return fmt.Sprintf("KVM_EXIT(%d)", uint32(r))
}

// Exit is what VCPU.Run returns: one of *IOExit, *MMIOExit, HLTExit,
// ShutdownExit, IntrExit, *InternalErrorExit, *FailEntryExit,
// *SystemEventExit or *UnknownExit. The pointer types are owned by the
// VCPU and reused: they are valid until the next Run.
type Exit interface {
	Reason() ExitReason
}

// IOExit is a port I/O access. For an OUT, Data holds the bytes written;
// for an IN, the handler fills Data before the next Run. Data spans
// Size*Count bytes (Count > 1 for rep ins/outs).
type IOExit struct {
	Port  uint16
	Size  uint8
	Out   bool
	Count uint32
	Data  []byte
}

func (*IOExit) Reason() ExitReason { return ExitIO }

// MMIOExit is a guest access to an address without memory or an
// ioeventfd. For a read, the handler fills Data before the next Run.
type MMIOExit struct {
	Addr  uint64
	Write bool
	Data  []byte
}

func (*MMIOExit) Reason() ExitReason { return ExitMMIO }

// HLTExit: the guest executed HLT (only without an in-kernel LAPIC).
type HLTExit struct{}

func (HLTExit) Reason() ExitReason { return ExitHLT }

// ShutdownExit: the guest triple-faulted (or otherwise shut down).
type ShutdownExit struct{}

func (ShutdownExit) Reason() ExitReason { return ExitShutdown }

// IntrExit: KVM_RUN was interrupted by a signal or by immediate_exit.
// Nothing happened in the guest; the caller decides whether to go on.
type IntrExit struct{}

func (IntrExit) Reason() ExitReason { return ExitIntr }

// Internal error suberrors (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation      = 1
	InternalErrorSimulEx        = 2
	InternalErrorDeliveryEv     = 3
	InternalErrorUnexpectedExit = 4
)

// InternalErrorExit: KVM could not continue, e.g. its instruction emulator
// met an instruction it does not implement (Suberror 1).
type InternalErrorExit struct {
	Suberror uint32
	Data     []uint64
}

func (*InternalErrorExit) Reason() ExitReason { return ExitInternalError }

// FailEntryExit: the hardware refused to enter the guest.
type FailEntryExit struct {
	HardwareReason uint64
	CPU            uint32
}

func (*FailEntryExit) Reason() ExitReason { return ExitFailEntry }

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// SystemEventExit: the guest asked for a shutdown, reset or crash through
// a paravirtual interface (PSCI on arm, Hyper-V, ...).
type SystemEventExit struct {
	Type uint32
	Data []uint64
}

func (*SystemEventExit) Reason() ExitReason { return ExitSystemEvent }

// UnknownExit is any exit reason govmm does not model.
type UnknownExit struct{ ExitReason ExitReason }

func (u *UnknownExit) Reason() ExitReason { return u.ExitReason }
