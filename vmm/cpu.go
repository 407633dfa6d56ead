package vmm

import (
	"fmt"

	"github.com/govmm/govmm/boot"
	"github.com/govmm/govmm/kvm"
)

// guestCPUID derives the CPUID a vCPU presents from what KVM supports:
// the APIC ID and logical-processor count in leaf 1, cores per package in
// leaf 4, the hypervisor bit, and a topology leaf 0xB (and 0x1F when the
// host has it) written from scratch, because KVM reports only the host's
// first sub-leaf and Linux would then take every vCPU for a package of
// its own.
func guestCPUID(supported []kvm.CPUIDEntry, id, cpus int) []kvm.CPUIDEntry {
	out := make([]kvm.CPUIDEntry, 0, len(supported)+6)
	maxLeaf := uint32(0)
	for _, e := range supported {
		switch e.Function {
		case 0:
			maxLeaf = e.EAX
		case 1:
			e.EBX = e.EBX&0x0000ffff | uint32(cpus&0xff)<<16 | uint32(id&0xff)<<24
			e.ECX |= 1 << 31 // hypervisor present
			if cpus > 1 {
				e.EDX |= 1 << 28 // HTT: EBX[23:16] is valid
			}
		case 4:
			// Deterministic cache parameters: EAX[31:26] is the number
			// of cores per package minus one.
			if e.EAX&0x1f != 0 {
				e.EAX = e.EAX&0x03ffffff | uint32(cpus-1)<<26
			}
		case 0xb, 0x1f:
			continue // synthesized below
		}
		out = append(out, e)
	}
	for _, leaf := range []uint32{0xb, 0x1f} {
		if leaf > maxLeaf {
			continue
		}
		out = append(out, topologyLeaf(leaf, id, cpus)...)
	}
	return out
}

// topologyLeaf describes one thread per core and cpus cores in one
// package: sub-leaf 0 the SMT level, 1 the core level, 2 the terminator.
func topologyLeaf(leaf uint32, id, cpus int) []kvm.CPUIDEntry {
	const (
		levelSMT  = 1 << 8
		levelCore = 2 << 8
	)
	f := uint32(kvm.CPUIDFlagSignificantIndex)
	x2apic := uint32(id)
	return []kvm.CPUIDEntry{
		{Function: leaf, Index: 0, Flags: f, EAX: 0, EBX: 1, ECX: levelSMT | 0, EDX: x2apic},
		{Function: leaf, Index: 1, Flags: f, EAX: bitsFor(cpus), EBX: uint32(cpus), ECX: levelCore | 1, EDX: x2apic},
		{Function: leaf, Index: 2, Flags: f, EAX: 0, EBX: 0, ECX: 2, EDX: x2apic},
	}
}

func bitsFor(n int) uint32 {
	var b uint32
	for (1 << b) < n {
		b++
	}
	return b
}

// MSRs every vCPU starts with.
const (
	msrIA32MiscEnable        = 0x1a0
	msrIA32MiscEnableFastStr = 1 << 0
)

// setupBSP puts the boot vCPU in the state the 64-bit boot protocol
// requires; application processors are left for the guest to start with
// INIT/SIPI through the in-kernel LAPIC.
func setupVCPU(v *kvm.VCPU, cpuid []kvm.CPUIDEntry, entry *boot.EntryState) error {
	if err := v.SetCPUID(cpuid); err != nil {
		return fmt.Errorf("vCPU %d: %w", v.ID(), err)
	}
	if err := v.SetMSRs([]kvm.MSREntry{{Index: msrIA32MiscEnable, Data: msrIA32MiscEnableFastStr}}); err != nil {
		return fmt.Errorf("vCPU %d: %w", v.ID(), err)
	}
	if err := setupLAPIC(v); err != nil {
		return fmt.Errorf("vCPU %d: %w", v.ID(), err)
	}
	if v.ID() != 0 {
		return nil
	}
	fpu := kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
	if err := v.SetFPU(fpu); err != nil {
		return fmt.Errorf("vCPU 0: %w", err)
	}
	s, err := v.Sregs()
	if err != nil {
		return fmt.Errorf("vCPU 0: %w", err)
	}
	s.CS = segment(entry.CS)
	ds := segment(entry.DS)
	s.DS, s.ES, s.FS, s.GS, s.SS = ds, ds, ds, ds, ds
	if entry.TR.Present != 0 {
		s.TR = segment(entry.TR)
	}
	s.GDT = kvm.DTable{Base: entry.GDT.Base, Limit: entry.GDT.Limit}
	s.IDT = kvm.DTable{Base: entry.IDT.Base, Limit: entry.IDT.Limit}
	s.CR0, s.CR3, s.CR4, s.EFER = entry.CR0, entry.CR3, entry.CR4, entry.EFER
	if err := v.SetSregs(s); err != nil {
		return fmt.Errorf("vCPU 0: %w", err)
	}
	regs := kvm.Regs{RIP: entry.RIP, RSI: entry.RSI, RSP: entry.RSP, RBP: entry.RSP, RFLAGS: entry.RFLAGS}
	if err := v.SetRegs(regs); err != nil {
		return fmt.Errorf("vCPU 0: %w", err)
	}
	return nil
}

func segment(s boot.Segment) kvm.Segment {
	return kvm.Segment{
		Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type,
		Present: s.Present, DPL: s.DPL, DB: s.DB, S: s.S, L: s.L, G: s.G, AVL: s.AVL,
	}
}

// LAPIC local vector table registers and delivery modes.
const (
	apicLVTLINT0   = 0x350
	apicLVTLINT1   = 0x360
	apicModeExtINT = 7 << 8
	apicModeNMI    = 4 << 8
)

// setupLAPIC wires LINT0 as ExtINT and LINT1 as NMI, as a PC's firmware
// would; Linux expects that wiring when it takes over the APIC.
func setupLAPIC(v *kvm.VCPU) error {
	l, err := v.LAPIC()
	if err != nil {
		return err
	}
	set := func(off int, mode uint32) {
		cur := uint32(l.Regs[off]) | uint32(l.Regs[off+1])<<8 | uint32(l.Regs[off+2])<<16 | uint32(l.Regs[off+3])<<24
		cur = cur&^0x700 | mode
		l.Regs[off], l.Regs[off+1], l.Regs[off+2], l.Regs[off+3] = byte(cur), byte(cur>>8), byte(cur>>16), byte(cur>>24)
	}
	set(apicLVTLINT0, apicModeExtINT)
	set(apicLVTLINT1, apicModeNMI)
	return v.SetLAPIC(l)
}
