package hostprobe

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/govmm/govmm/kvm"
)

// EmulatedRatio is how many times faster CPL3 must run than CPL0 for guest
// kernel code to count as emulated. Natively the two run the loop at the
// same speed; under KVM's emulator CPL0 is about a thousand times slower.
const EmulatedRatio = 20

// MinLinuxCPL0Rate is the emulated CPL0 speed (loop iterations/s) below
// which booting Linux is impractical: at about 1e6 Linux takes a minute
// and a half to reach init, so below 5e4 it would take half an hour or
// more.
const MinLinuxCPL0Rate = 5e4

// IsSupervisorEmulated applies the EmulatedRatio threshold to measured
// CPL0 and CPL3 speeds. Unmeasured (zero) speeds count as not emulated.
func IsSupervisorEmulated(cpl0, cpl3 float64) bool {
	return cpl0 > 0 && cpl3 >= EmulatedRatio*cpl0
}

// CapStatus is one KVM capability and what KVM_CHECK_EXTENSION said.
type CapStatus struct {
	Cap      kvm.Cap
	Name     string // e.g. "KVM_CAP_IOEVENTFD"
	Value    int    // 0: absent; otherwise 1 or a count/limit
	Required bool   // govmm cannot run a VM without it
}

// Verdict summarises what govmm can run on the host.
type Verdict int

const (
	// VerdictNone: KVM works but lacks a capability govmm requires.
	VerdictNone Verdict = iota
	// VerdictTinyKernels: only the tiny test kernels (guest kernel code is
	// too slow for Linux, or its speed could not be measured).
	VerdictTinyKernels
	// VerdictLinuxToInit: guest kernel code is emulated; Linux boots to
	// init with the emulation assists but its user space cannot run.
	VerdictLinuxToInit
	// VerdictLinuxWithUserSpace: hardware runs guest kernel code.
	VerdictLinuxWithUserSpace
)

func (v Verdict) String() string {
	switch v {
	case VerdictNone:
		return "none"
	case VerdictTinyKernels:
		return "tiny-kernels"
	case VerdictLinuxToInit:
		return "linux-to-init"
	case VerdictLinuxWithUserSpace:
		return "linux-with-user-space"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Report is what Probe found.
type Report struct {
	KVMPath    string
	APIVersion int
	// Caps lists every capability govmm uses, required ones first.
	Caps []CapStatus

	VhostNet    bool   // /dev/vhost-net opens (kernel vhost-net backends)
	VhostNetWhy string // why not, when it does not
	TUN         bool   // /dev/net/tun opens (TAP devices)
	TUNWhy      string

	CPUHasVMX    bool   // /proc/cpuinfo lists vmx
	CPUHasSVM    bool   // /proc/cpuinfo lists svm
	NestedModule string // e.g. "kvm_pvm" if that module is loaded, else ""

	// Guest loop speeds in iterations per second (0 if not measured).
	CPL0LoopsPerSec    float64
	CPL3LoopsPerSec    float64
	MeasureError       string // why the speeds are missing, if they are
	SupervisorEmulated bool   // CPL3 >= EmulatedRatio x CPL0

	Verdict     Verdict
	VerdictText string
}

// capsToProbe returns every capability govmm uses: the required ones, then
// the optional ones it reports or takes advantage of.
func capsToProbe() []CapStatus {
	var out []CapStatus
	for _, c := range kvm.RequiredCaps() {
		out = append(out, CapStatus{Cap: c, Name: c.String(), Required: true})
	}
	for _, c := range []kvm.Cap{
		kvm.CapIoeventfdAnyLength, kvm.CapSplitIRQChip, kvm.CapReadonlyMem,
		kvm.CapSignalMSI, kvm.CapExtCPUID, kvm.CapMPState,
		kvm.CapMaxVCPUs, kvm.CapNRMemSlots,
	} {
		out = append(out, CapStatus{Cap: c, Name: c.String()})
	}
	return out
}

// Probe examines the KVM device at kvmPath (usually kvm.DevicePath) and
// the host around it. It fails only when KVM cannot be used at all (no
// device, wrong API, an ioctl failing) or ctx ends; a failed speed
// measurement is recorded in the Report instead.
func Probe(ctx context.Context, kvmPath string) (*Report, error) {
	sys, err := kvm.Open(kvmPath)
	if err != nil {
		return nil, fmt.Errorf("probe KVM: %w", err)
	}
	defer sys.Close()
	r := &Report{KVMPath: kvmPath}
	if r.APIVersion, err = sys.APIVersion(); err != nil {
		return nil, fmt.Errorf("probe KVM: %w", err)
	}
	r.Caps = capsToProbe()
	for i := range r.Caps {
		if r.Caps[i].Value, err = sys.CheckExtension(r.Caps[i].Cap); err != nil {
			return nil, fmt.Errorf("probe KVM: %w", err)
		}
	}
	var werr error
	r.VhostNet, werr = deviceOpens(VhostNetPath)
	r.VhostNetWhy = why(werr)
	r.TUN, werr = deviceOpens(TUNPath)
	r.TUNWhy = why(werr)
	h := readHostFacts(os.DirFS("/"))
	r.CPUHasVMX, r.CPUHasSVM, r.NestedModule = h.vmx, h.svm, h.nestedModule

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("probe KVM: %w", err)
	}
	if len(r.MissingCaps()) == 0 {
		r.CPL0LoopsPerSec, r.CPL3LoopsPerSec, err = measureSpeed(ctx, sys)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("probe KVM: %w", ctx.Err())
		}
		if err != nil {
			r.MeasureError = err.Error()
		}
	} else {
		r.MeasureError = "not measured: KVM lacks required capabilities"
	}
	r.SupervisorEmulated = IsSupervisorEmulated(r.CPL0LoopsPerSec, r.CPL3LoopsPerSec)
	r.Verdict, r.VerdictText = r.decide()
	return r, nil
}

// MissingCaps returns the names of the required capabilities KVM lacks.
func (r *Report) MissingCaps() []string {
	var m []string
	for _, c := range r.Caps {
		if c.Required && c.Value == 0 {
			m = append(m, c.Name)
		}
	}
	return m
}

// Quirks returns the quirks the VMM should apply on this host.
func (r *Report) Quirks() Quirks { return QuirksFor(r.SupervisorEmulated) }

// decide derives the verdict from the other fields.
func (r *Report) decide() (Verdict, string) {
	if m := r.MissingCaps(); len(m) > 0 {
		return VerdictNone, "no VMs: KVM lacks " + strings.Join(m, ", ")
	}
	if r.MeasureError != "" || r.CPL0LoopsPerSec <= 0 || r.CPL3LoopsPerSec <= 0 {
		return VerdictTinyKernels, "tiny kernels; Linux unknown (guest kernel-mode speed could not be measured)"
	}
	if !r.SupervisorEmulated {
		return VerdictLinuxWithUserSpace, "tiny kernels; Linux with user space"
	}
	if r.CPL0LoopsPerSec < MinLinuxCPL0Rate {
		return VerdictTinyKernels, fmt.Sprintf("tiny kernels; Linux impractical (emulated guest kernel code runs %s loop iterations/s); Linux user space needs hardware virtualization", rate(r.CPL0LoopsPerSec))
	}
	return VerdictLinuxToInit, "tiny kernels; Linux to init (with emulation assists); Linux user space needs hardware virtualization"
}

func rate(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f G", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2f k", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func yesNo(b bool, why string) string {
	if b {
		return "yes"
	}
	if why != "" {
		return "no (" + why + ")"
	}
	return "no"
}

// WriteText writes the report for people: one fact per line, ending with
// a single "verdict:" line.
func (r *Report) WriteText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("KVM device:          %s (API version %d)\n", r.KVMPath, r.APIVersion)
	p("KVM capabilities:    (* = required)\n")
	for _, c := range r.Caps {
		mark := " "
		if c.Required {
			mark = "*"
		}
		val := fmt.Sprint(c.Value)
		if c.Value == 0 {
			val = "missing"
		}
		p("  %s %-32s %s\n", mark, c.Name, val)
	}
	p("kernel vhost-net:    %s\n", yesNo(r.VhostNet, r.VhostNetWhy))
	p("TUN/TAP:             %s\n", yesNo(r.TUN, r.TUNWhy))
	flags := []string{}
	if r.CPUHasVMX {
		flags = append(flags, "vmx")
	}
	if r.CPUHasSVM {
		flags = append(flags, "svm")
	}
	if len(flags) == 0 {
		flags = append(flags, "neither vmx nor svm")
	}
	p("CPU virtualization:  %s\n", strings.Join(flags, ", "))
	if r.NestedModule != "" {
		p("nested KVM module:   %s\n", r.NestedModule)
	}
	if r.MeasureError != "" {
		p("guest speed:         unknown: %s\n", r.MeasureError)
	} else {
		p("guest CPL0 loop:     %s iterations/s\n", rate(r.CPL0LoopsPerSec))
		p("guest CPL3 loop:     %s iterations/s\n", rate(r.CPL3LoopsPerSec))
		how := "guest kernel code runs natively"
		if r.SupervisorEmulated {
			how = "guest kernel code is emulated"
		}
		p("CPL3/CPL0:           %.0fx (%s)\n", r.CPL3LoopsPerSec/r.CPL0LoopsPerSec, how)
	}
	q := r.Quirks()
	if q.Any() {
		p("quirks:              emulation assists (int3, clac, stac, popcnt), hide CX16 and KVM CPUID leaves, kernel args %q\n", strings.Join(q.KernelArgs(), " "))
	} else {
		p("quirks:              none\n")
	}
	p("verdict: %s\n", r.VerdictText)
}
