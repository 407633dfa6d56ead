package assist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync/atomic"
)

// Memory reads guest memory by linear (virtual) address, as the vCPU would
// see it: the VMM implements it with KVM_TRANSLATE and guest RAM (see
// LinearMemory).
type Memory interface {
	ReadLinear(addr uint64, p []byte) error
}

// Action is the outcome of an assist: the registers to write back with
// KVM_SET_REGS and, for int3, whether to inject #BP.
type Action struct {
	Kind    Kind
	Length  int  // instruction length in bytes
	NewRegs Regs // the state after the instruction (RIP advanced)
	// InjectBP asks the VMM to inject #BP (vector 3) with
	// KVM_SET_VCPU_EVENTS. #BP is a trap, so NewRegs.RIP is already past
	// the int3: that is the RIP the guest's handler must see.
	InjectBP bool
}

// Apply completes the instruction at the start of insn (the bytes at
// regs.RIP) against regs, reading a memory operand through mem (which may
// be nil when no memory operand is expected). An instruction the package
// does not complete yields an *UnsupportedError naming RIP and the bytes;
// a failed memory read yields an error wrapping the Memory's error.
// regs is not modified; the new state is in the returned Action.
func Apply(insn []byte, regs Regs, mem Memory) (Action, error) {
	d, err := decode(insn)
	if err != nil {
		var ue *UnsupportedError
		if errors.As(err, &ue) {
			ue.RIP, ue.HaveRIP = regs.RIP, true
		}
		return Action{}, err
	}
	a := Action{Kind: d.kind, Length: d.length, NewRegs: regs}
	r := &a.NewRegs
	switch d.kind {
	case KindInt3:
		a.InjectBP = true
	case KindCLAC:
		r.RFLAGS &^= FlagAC
	case KindSTAC:
		r.RFLAGS |= FlagAC
	case KindPOPCNT:
		src, err := popcntSource(d, regs, mem)
		if err != nil {
			return Action{}, err
		}
		n := uint64(bits.OnesCount64(src))
		switch d.opSize {
		case 2: // a 16-bit destination keeps bits 63:16
			r.GPR[d.reg] = r.GPR[d.reg]&^0xffff | n
		default: // 32-bit results zero-extend to 64 bits
			r.GPR[d.reg] = n
		}
		r.RFLAGS &^= arithFlags
		if src == 0 {
			r.RFLAGS |= FlagZF
		}
	}
	r.RIP = regs.RIP + uint64(d.length)
	return a, nil
}

// popcntSource fetches popcnt's source operand, truncated to its size.
func popcntSource(d decoded, regs Regs, mem Memory) (uint64, error) {
	if d.regForm {
		v := regs.GPR[d.rm]
		if d.opSize < 8 {
			v &= 1<<(8*d.opSize) - 1
		}
		return v, nil
	}
	addr := effectiveAddress(d, regs)
	if mem == nil {
		return 0, fmt.Errorf("popcnt at RIP %#x: memory operand at linear address %#x but no guest memory reader", regs.RIP, addr)
	}
	var buf [8]byte
	if err := mem.ReadLinear(addr, buf[:d.opSize]); err != nil {
		return 0, fmt.Errorf("popcnt at RIP %#x: read %d-byte operand at linear address %#x: %w", regs.RIP, d.opSize, addr, err)
	}
	return binary.LittleEndian.Uint64(buf[:]), nil
}

// effectiveAddress returns the linear address of d's memory operand.
func effectiveAddress(d decoded, regs Regs) uint64 {
	var ea uint64
	if d.ripRel {
		ea = regs.RIP + uint64(d.length) + uint64(d.disp)
	} else {
		if d.base != noReg {
			ea = regs.GPR[d.base]
		}
		if d.index != noReg {
			ea += regs.GPR[d.index] << d.scale
		}
		ea += uint64(d.disp)
	}
	if d.addr32 {
		ea &= 0xffffffff
	}
	switch d.seg {
	case 0x64:
		ea += regs.FSBase
	case 0x65:
		ea += regs.GSBase
	}
	return ea
}

// Counters counts completed assists per Kind. The zero value is ready;
// it is safe for concurrent use by every vCPU goroutine.
type Counters struct {
	n [numKinds]atomic.Uint64
}

// Add counts one assist of kind k (unknown kinds are ignored).
func (c *Counters) Add(k Kind) {
	if k > KindUnknown && k < numKinds {
		c.n[k].Add(1)
	}
}

// Count returns how many assists of kind k were counted.
func (c *Counters) Count(k Kind) uint64 {
	if k > KindUnknown && k < numKinds {
		return c.n[k].Load()
	}
	return 0
}

// Total returns the number of assists of every kind.
func (c *Counters) Total() uint64 {
	var t uint64
	for _, k := range Kinds() {
		t += c.Count(k)
	}
	return t
}

// String formats the counts as "int3=12 clac=400 stac=400 popcnt=3".
func (c *Counters) String() string {
	var b strings.Builder
	for i, k := range Kinds() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v=%d", k, c.Count(k))
	}
	return b.String()
}
