package hostprobe

import (
	"bytes"
	"strings"
	"testing"

	"github.com/govmm/govmm/kvm"
)

func TestIsSupervisorEmulated(t *testing.T) {
	cases := []struct {
		cpl0, cpl3 float64
		want       bool
	}{
		{1e6, 2.8e9, true},    // this project's CI hosts
		{2.8e9, 2.8e9, false}, // hardware virtualization
		{1e9, 1.5e9, false},
		{1, EmulatedRatio, true},
		{1, EmulatedRatio * 0.99, false},
		{0, 1e9, false}, // not measured
		{0, 0, false},
	}
	for _, c := range cases {
		if got := IsSupervisorEmulated(c.cpl0, c.cpl3); got != c.want {
			t.Errorf("IsSupervisorEmulated(%g, %g) = %v, want %v", c.cpl0, c.cpl3, got, c.want)
		}
	}
}

// fakeReport builds a report with every capability present.
func fakeReport(cpl0, cpl3 float64) *Report {
	r := &Report{KVMPath: "/dev/kvm", APIVersion: 12, Caps: capsToProbe(), CPL0LoopsPerSec: cpl0, CPL3LoopsPerSec: cpl3}
	for i := range r.Caps {
		r.Caps[i].Value = 1
	}
	r.SupervisorEmulated = IsSupervisorEmulated(cpl0, cpl3)
	return r
}

func TestDecide(t *testing.T) {
	const (
		toInit   = "tiny kernels; Linux to init (with emulation assists); Linux user space needs hardware virtualization"
		fullUser = "tiny kernels; Linux with user space"
	)
	cases := []struct {
		name   string
		report func() *Report
		want   Verdict
		text   string // exact, or a prefix ending in "..."
	}{
		{"emulated", func() *Report { return fakeReport(1e6, 2.8e9) }, VerdictLinuxToInit, toInit},
		{"native", func() *Report { return fakeReport(2.5e9, 2.8e9) }, VerdictLinuxWithUserSpace, fullUser},
		{"emulated and very slow", func() *Report { return fakeReport(2e4, 2.8e9) }, VerdictTinyKernels, "tiny kernels; Linux impractical (emulated guest kernel code runs 20.00 k loop..."},
		{"measurement failed", func() *Report {
			r := fakeReport(0, 0)
			r.MeasureError = "boom"
			return r
		}, VerdictTinyKernels, "tiny kernels; Linux unknown..."},
		{"missing required caps", func() *Report {
			r := fakeReport(2.5e9, 2.8e9)
			for i := range r.Caps {
				if r.Caps[i].Cap == kvm.CapIRQFD || r.Caps[i].Cap == kvm.CapPIT2 || r.Caps[i].Cap == kvm.CapReadonlyMem {
					r.Caps[i].Value = 0
				}
			}
			return r
		}, VerdictNone, "no VMs: KVM lacks KVM_CAP_IRQFD, KVM_CAP_PIT2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, text := c.report().decide()
			if v != c.want {
				t.Errorf("verdict %v, want %v", v, c.want)
			}
			if p, ok := strings.CutSuffix(c.text, "..."); ok {
				if !strings.HasPrefix(text, p) {
					t.Errorf("text %q, want prefix %q", text, p)
				}
			} else if text != c.text {
				t.Errorf("text %q, want %q", text, c.text)
			}
		})
	}
}

func TestWriteText(t *testing.T) {
	r := fakeReport(1.02e6, 2.81e9)
	r.NestedModule = "kvm_pvm"
	r.TUN = true
	r.VhostNetWhy = "does not exist"
	r.Verdict, r.VerdictText = r.decide()
	var b bytes.Buffer
	r.WriteText(&b)
	out := b.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if last := lines[len(lines)-1]; last != "verdict: "+r.VerdictText {
		t.Fatalf("last line %q", last)
	}
	if strings.Count(out, "verdict:") != 1 {
		t.Fatalf("more than one verdict line:\n%s", out)
	}
	for _, want := range []string{
		"/dev/kvm (API version 12)", "* KVM_CAP_IOEVENTFD", "KVM_CAP_NR_MEMSLOTS", "kernel vhost-net:    no (does not exist)",
		"TUN/TAP:             yes", "neither vmx nor svm", "kvm_pvm", "1.02 M iterations/s", "2.81 G iterations/s",
		"guest kernel code is emulated", `"noxsave"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// A missing capability is spelled out.
	r.Caps[0].Value = 0
	b.Reset()
	r.WriteText(&b)
	if !strings.Contains(b.String(), r.Caps[0].Name) || !strings.Contains(b.String(), "missing") {
		t.Fatalf("missing capability not shown:\n%s", b.String())
	}
}

func TestCapsToProbe(t *testing.T) {
	caps := capsToProbe()
	seen := map[kvm.Cap]bool{}
	for _, c := range caps {
		if seen[c.Cap] {
			t.Fatalf("%v listed twice", c.Name)
		}
		seen[c.Cap] = true
	}
	for _, c := range kvm.RequiredCaps() {
		if !seen[c] {
			t.Errorf("required %v not probed", c)
		}
	}
	for _, c := range []kvm.Cap{kvm.CapIoeventfdAnyLength, kvm.CapSplitIRQChip, kvm.CapReadonlyMem, kvm.CapMaxVCPUs, kvm.CapNRMemSlots} {
		if !seen[c] {
			t.Errorf("%v not probed", c)
		}
	}
}
