package assist

import (
	"fmt"

	"github.com/govmm/govmm/kvm"
)

// General-purpose register numbers as x86 encodes them in ModRM, SIB and
// REX: the index into Regs.GPR.
const (
	RAX = iota
	RCX
	RDX
	RBX
	RSP
	RBP
	RSI
	RDI
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
)

// RFLAGS bits the assists read or write.
const (
	FlagCF = 1 << 0
	FlagPF = 1 << 2
	FlagAF = 1 << 4
	FlagZF = 1 << 6
	FlagSF = 1 << 7
	FlagOF = 1 << 11
	FlagAC = 1 << 18

	// arithFlags are the six status flags popcnt defines.
	arithFlags = FlagCF | FlagPF | FlagAF | FlagZF | FlagSF | FlagOF
)

// Regs is the part of a vCPU's state the assists read and write.
type Regs struct {
	// GPR holds the 16 general-purpose registers in x86 encoding order
	// (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8 ... R15): index it
	// with the constants above.
	GPR    [16]uint64
	RIP    uint64
	RFLAGS uint64
	// FSBase and GSBase are the FS and GS segment bases: the only
	// segment bases that count in 64-bit mode, used when a memory operand
	// carries an FS or GS override.
	FSBase uint64
	GSBase uint64
}

// RegsFromKVM builds Regs from the vCPU's registers and segment registers.
// It fails unless the vCPU is in 64-bit mode (EFER.LMA and CS.L), the only
// mode this package decodes.
func RegsFromKVM(r kvm.Regs, s kvm.Sregs) (Regs, error) {
	const eferLMA = 1 << 10
	if s.EFER&eferLMA == 0 || s.CS.L == 0 {
		return Regs{}, fmt.Errorf("emulation assist at RIP %#x: vCPU is not in 64-bit mode (EFER %#x, CS.L %d)", r.RIP, s.EFER, s.CS.L)
	}
	return Regs{
		GPR: [16]uint64{
			r.RAX, r.RCX, r.RDX, r.RBX, r.RSP, r.RBP, r.RSI, r.RDI,
			r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15,
		},
		RIP:    r.RIP,
		RFLAGS: r.RFLAGS,
		FSBase: s.FS.Base,
		GSBase: s.GS.Base,
	}, nil
}

// KVM returns the registers in KVM_SET_REGS form. (FS and GS bases are
// never changed by an assist, so there is nothing to write back to the
// segment registers.)
func (r Regs) KVM() kvm.Regs {
	g := &r.GPR
	return kvm.Regs{
		RAX: g[RAX], RBX: g[RBX], RCX: g[RCX], RDX: g[RDX],
		RSI: g[RSI], RDI: g[RDI], RSP: g[RSP], RBP: g[RBP],
		R8: g[R8], R9: g[R9], R10: g[R10], R11: g[R11],
		R12: g[R12], R13: g[R13], R14: g[R14], R15: g[R15],
		RIP: r.RIP, RFLAGS: r.RFLAGS,
	}
}

// BreakpointEvents returns ev changed to inject #BP (vector 3, no error
// code), for KVM_SET_VCPU_EVENTS after an int3 assist. #BP is a trap: the
// RIP Apply returned, past the int3, is the one the handler must see.
// Flags is cleared so that the call changes nothing but the exception.
func BreakpointEvents(ev kvm.VCPUEvents) kvm.VCPUEvents {
	ev.Exception.Injected = 1
	ev.Exception.Nr = 3
	ev.Exception.HasErrorCode = 0
	ev.Exception.Pending = 0
	ev.Exception.ErrorCode = 0
	ev.Flags = 0
	return ev
}
