package kvm

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// VCPU owns a vCPU fd and its kvm_run mapping. Run must be called from one
// goroutine locked to its OS thread (runtime.LockOSThread): KVM binds a
// vCPU's state to the thread that runs it, and Stop signals that thread.
type VCPU struct {
	id  int
	f   *os.File
	run []byte

	tid     atomic.Int32 // thread currently in Run, 0 if none
	stopped atomic.Bool

	// Reused exit values (valid until the next Run).
	io       IOExit
	mmio     MMIOExit
	internal InternalErrorExit
	fail     FailEntryExit
	sysev    SystemEventExit
	unknown  UnknownExit

	closeMu sync.Mutex
	closed  bool
}

// ID returns the vCPU index given to CreateVCPU (its initial APIC ID).
func (v *VCPU) ID() int { return v.id }

func (v *VCPU) fd() int { return int(v.f.Fd()) }

// Regs reads the general-purpose registers.
func (v *VCPU) Regs() (Regs, error) {
	var r Regs
	_, err := ioctlPtr(v.fd(), "KVM_GET_REGS", kvmGetRegs, &r)
	return r, err
}

// SetRegs writes the general-purpose registers.
func (v *VCPU) SetRegs(r Regs) error {
	_, err := ioctlPtr(v.fd(), "KVM_SET_REGS", kvmSetRegs, &r)
	return err
}

// Sregs reads the segment and control registers.
func (v *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlPtr(v.fd(), "KVM_GET_SREGS", kvmGetSregs, &s)
	return s, err
}

// SetSregs writes the segment and control registers.
func (v *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlPtr(v.fd(), "KVM_SET_SREGS", kvmSetSregs, &s)
	return err
}

// FPU reads the x87/SSE state.
func (v *VCPU) FPU() (FPU, error) {
	var f FPU
	_, err := ioctlPtr(v.fd(), "KVM_GET_FPU", kvmGetFPU, &f)
	return f, err
}

// SetFPU writes the x87/SSE state.
func (v *VCPU) SetFPU(f FPU) error {
	_, err := ioctlPtr(v.fd(), "KVM_SET_FPU", kvmSetFPU, &f)
	return err
}

// SetCPUID sets what CPUID reports to the guest on this vCPU.
func (v *VCPU) SetCPUID(entries []CPUIDEntry) error {
	buf := cpuidToBytes(entries)
	_, err := ioctlBuf(v.fd(), "KVM_SET_CPUID2", kvmSetCPUID2, buf)
	return err
}

// SetMSRs writes model-specific registers. KVM returns how many it set;
// fewer than asked is reported as an error naming the first rejected MSR.
func (v *VCPU) SetMSRs(entries []MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	n, err := ioctlBuf(v.fd(), "KVM_SET_MSRS", kvmSetMSRs, msrsToBytes(entries))
	if err != nil {
		return err
	}
	if int(n) != len(entries) {
		return fmt.Errorf("KVM_SET_MSRS: set %d of %d, MSR %#x rejected", n, len(entries), entries[n].Index)
	}
	return nil
}

// MSRs reads the MSRs whose Index fields are set in entries, filling Data.
func (v *VCPU) MSRs(entries []MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	buf := msrsToBytes(entries)
	n, err := ioctlBuf(v.fd(), "KVM_GET_MSRS", kvmGetMSRs, buf)
	if err != nil {
		return err
	}
	if int(n) != len(entries) {
		return fmt.Errorf("KVM_GET_MSRS: read %d of %d, MSR %#x rejected", n, len(entries), entries[n].Index)
	}
	msrsFromBytes(buf, entries)
	return nil
}

// LAPIC reads the in-kernel local APIC registers.
func (v *VCPU) LAPIC() (LAPICState, error) {
	var l LAPICState
	_, err := ioctlPtr(v.fd(), "KVM_GET_LAPIC", kvmGetLAPIC, &l)
	return l, err
}

// SetLAPIC writes the in-kernel local APIC registers.
func (v *VCPU) SetLAPIC(l LAPICState) error {
	_, err := ioctlPtr(v.fd(), "KVM_SET_LAPIC", kvmSetLAPIC, &l)
	return err
}

// Events reads pending exception/interrupt/NMI state.
func (v *VCPU) Events() (VCPUEvents, error) {
	var e VCPUEvents
	_, err := ioctlPtr(v.fd(), "KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, &e)
	return e, err
}

// SetEvents writes pending exception/interrupt/NMI state, e.g. to inject
// an exception.
func (v *VCPU) SetEvents(e VCPUEvents) error {
	_, err := ioctlPtr(v.fd(), "KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents, &e)
	return err
}

// MP states (KVM_MP_STATE_*).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// MPState reads the multiprocessing state (halted, waiting for SIPI, ...).
func (v *VCPU) MPState() (uint32, error) {
	var s uint32
	_, err := ioctlPtr(v.fd(), "KVM_GET_MP_STATE", kvmGetMPState, &s)
	return s, err
}

// SetMPState writes the multiprocessing state.
func (v *VCPU) SetMPState(s uint32) error {
	_, err := ioctlPtr(v.fd(), "KVM_SET_MP_STATE", kvmSetMPState, &s)
	return err
}

// Translate walks the guest page tables for a linear address
// (KVM_TRANSLATE). ok is false when the address is not mapped.
func (v *VCPU) Translate(linear uint64) (phys uint64, ok bool, err error) {
	t := translation{LinearAddress: linear}
	if _, err := ioctlPtr(v.fd(), "KVM_TRANSLATE", kvmTranslate, &t); err != nil {
		return 0, false, err
	}
	return t.PhysicalAddress, t.Valid != 0, nil
}

// Run enters the guest until the next exit that needs userspace, and
// returns it. A signal or Stop yields IntrExit; once Stop has been called
// every Run returns IntrExit at once. Errors other than EINTR are returned
// as errors: they are never silently discarded.
func (v *VCPU) Run() (Exit, error) {
	if v.stopped.Load() {
		return IntrExit{}, nil
	}
	v.tid.Store(int32(unix.Gettid()))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(v.fd()), kvmRun, 0)
	v.tid.Store(0)
	switch errno {
	case 0:
	case unix.EINTR, unix.EAGAIN:
		return IntrExit{}, nil
	default:
		return nil, &ioctlError{op: fmt.Sprintf("KVM_RUN vCPU %d", v.id), errno: errno}
	}
	return v.decodeExit(), nil
}

// Stop makes the current and every later Run return IntrExit promptly:
// it sets kvm_run.immediate_exit (which covers a Run that is about to
// enter the guest) and signals the thread inside KVM_RUN, if any. It is
// safe to call from any goroutine, any number of times.
func (v *VCPU) Stop() {
	v.stopped.Store(true)
	v.closeMu.Lock()
	defer v.closeMu.Unlock()
	if v.closed {
		return
	}
	v.setImmediateExit()
	if tid := v.tid.Load(); tid != 0 {
		// SIGURG: the Go runtime already uses it for preemption and
		// ignores unexpected ones, so it needs no handler of ours, yet it
		// interrupts KVM_RUN with EINTR.
		_ = unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}

// Stopped reports whether Stop was called.
func (v *VCPU) Stopped() bool { return v.stopped.Load() }

// Close unmaps kvm_run and closes the vCPU fd. It is idempotent. Call it
// only after the goroutine running this vCPU has returned.
func (v *VCPU) Close() error {
	v.closeMu.Lock()
	defer v.closeMu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	var first error
	if v.run != nil {
		if err := unix.Munmap(v.run); err != nil {
			first = fmt.Errorf("munmap kvm_run of vCPU %d: %w", v.id, err)
		}
		v.run = nil
	}
	if err := v.f.Close(); err != nil && first == nil {
		first = err
	}
	return first
}
