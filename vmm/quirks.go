package vmm

import (
	"fmt"
	"strings"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vmm/assist"
	"github.com/govmm/govmm/vmm/hostprobe"
)

// QuirksMode chooses whether govmm works around a KVM that emulates guest
// kernel code (see vmm/hostprobe and HOST.md-style hosts): emulation
// assists, CX16 and the KVM paravirtual CPUID leaves hidden, "noxsave"
// appended to the command line.
type QuirksMode int

const (
	// QuirksAuto turns the quirks on when the host CPU shows neither vmx
	// nor svm (hostprobe.GuessSupervisorEmulated).
	QuirksAuto QuirksMode = iota
	// QuirksOn forces them on.
	QuirksOn
	// QuirksOff forces them off.
	QuirksOff
)

// ParseQuirksMode parses "auto", "on" or "off".
func ParseQuirksMode(s string) (QuirksMode, error) {
	switch s {
	case "auto", "":
		return QuirksAuto, nil
	case "on":
		return QuirksOn, nil
	case "off":
		return QuirksOff, nil
	}
	return QuirksAuto, fmt.Errorf("host quirks %q: want auto, on or off", s)
}

// decideQuirks resolves the mode into the quirks to apply, with a reason
// for the log.
func decideQuirks(mode QuirksMode, guess func() (bool, string)) (hostprobe.Quirks, string) {
	switch mode {
	case QuirksOn:
		return hostprobe.QuirksFor(true), "forced on"
	case QuirksOff:
		return hostprobe.QuirksFor(false), "forced off"
	}
	emulated, why := guess()
	return hostprobe.QuirksFor(emulated), why
}

// withKernelArgs appends each of args to cmdline unless the user already
// passed it.
func withKernelArgs(cmdline string, args []string) string {
	have := strings.Fields(cmdline)
next:
	for _, a := range args {
		for _, h := range have {
			if h == a {
				continue next
			}
		}
		cmdline = strings.TrimSpace(cmdline + " " + a)
	}
	return cmdline
}

// assist completes the instruction KVM's emulator just refused on v, if
// it is one of the few vmm/assist knows (int3, clac, stac, popcnt), and
// counts it. Anything else is returned as an error that shows RIP and the
// instruction bytes.
func (m *Machine) assist(v *kvm.VCPU) error {
	regs, err := v.Regs()
	if err != nil {
		return err
	}
	sregs, err := v.Sregs()
	if err != nil {
		return err
	}
	ar, err := assist.RegsFromKVM(regs, sregs)
	if err != nil {
		return fmt.Errorf("emulation failure at RIP %#x: %w", regs.RIP, err)
	}
	mem := assist.LinearMemory{Translate: v.Translate, ReadPhys: m.readPhys}
	insn, err := assist.FetchInstruction(mem, regs.RIP)
	if err != nil {
		return fmt.Errorf("emulation failure at RIP %#x: fetch instruction: %w", regs.RIP, err)
	}
	act, err := assist.Apply(insn, ar, mem)
	if err != nil {
		return err
	}
	if err := v.SetRegs(act.NewRegs.KVM()); err != nil {
		return err
	}
	if act.InjectBP {
		ev, err := v.Events()
		if err != nil {
			return err
		}
		if err := v.SetEvents(assist.BreakpointEvents(ev)); err != nil {
			return err
		}
	}
	m.assists.Add(act.Kind)
	return nil
}

// readPhys copies guest-physical memory at gpa into p.
func (m *Machine) readPhys(gpa uint64, p []byte) error {
	for _, r := range m.ram.Regions() {
		if gpa >= r.GPA && gpa-r.GPA < uint64(len(r.Mem)) {
			off := gpa - r.GPA
			if uint64(len(p)) > uint64(len(r.Mem))-off {
				return fmt.Errorf("read %d bytes at guest physical %#x: crosses the end of RAM", len(p), gpa)
			}
			copy(p, r.Mem[off:])
			return nil
		}
	}
	return fmt.Errorf("read guest physical %#x: not RAM", gpa)
}

// AssistCounts reports how many instructions of each kind the emulation
// assists completed, e.g. "int3=12 clac=400 stac=400 popcnt=3".
func (m *Machine) AssistCounts() string { return m.assists.String() }
