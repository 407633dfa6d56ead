package hostprobe

import (
	"slices"
	"testing"

	"github.com/govmm/govmm/kvm"
)

func TestQuirksFor(t *testing.T) {
	cases := []struct {
		emulated bool
		want     Quirks
		args     []string
	}{
		{true, Quirks{Assists: true, HideCX16: true, HideKVMLeaves: true, NoXSave: true}, []string{"noxsave"}},
		{false, Quirks{}, nil},
	}
	for _, c := range cases {
		q := QuirksFor(c.emulated)
		if q != c.want || q.Any() != c.emulated || !slices.Equal(q.KernelArgs(), c.args) {
			t.Errorf("QuirksFor(%v) = %+v (args %q), want %+v (args %q)", c.emulated, q, q.KernelArgs(), c.want, c.args)
		}
	}
}

func TestApplyCPUIDQuirks(t *testing.T) {
	in := []kvm.CPUIDEntry{
		{Function: 0, EAX: 0xd},
		{Function: 1, ECX: 0xffffffff, EDX: 0xffffffff},
		{Function: 7, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex, EBX: 0xffffffff},
		{Function: 0x40000000, EAX: 0x40000001, EBX: 0x4b4d564b},
		{Function: 0x40000001, EAX: 0xffffffff},
		{Function: 0x400000ff},
		{Function: 0x40000100, EAX: 1}, // beyond the KVM range: kept
		{Function: 0x80000001, ECX: 0xffffffff},
	}
	orig := slices.Clone(in)

	t.Run("emulated", func(t *testing.T) {
		out := ApplyCPUIDQuirks(in, QuirksFor(true))
		var fns []uint32
		for _, e := range out {
			fns = append(fns, e.Function)
		}
		if want := []uint32{0, 1, 7, 0x40000100, 0x80000001}; !slices.Equal(fns, want) {
			t.Fatalf("leaves %#x, want %#x", fns, want)
		}
		if out[1].ECX != 0xffffffff&^(1<<13) || out[1].EDX != 0xffffffff {
			t.Fatalf("leaf 1 ECX %#x EDX %#x: want only CX16 (bit 13) cleared", out[1].ECX, out[1].EDX)
		}
		if out[2] != in[2] || out[4] != in[7] {
			t.Fatal("other leaves changed")
		}
	})
	t.Run("native", func(t *testing.T) {
		out := ApplyCPUIDQuirks(in, QuirksFor(false))
		if !slices.Equal(out, in) {
			t.Fatalf("native quirks changed CPUID:\n%+v", out)
		}
		out[1].ECX = 0
		if in[1].ECX == 0 {
			t.Fatal("result aliases the input")
		}
	})
	t.Run("one quirk at a time", func(t *testing.T) {
		out := ApplyCPUIDQuirks(in, Quirks{HideCX16: true})
		if len(out) != len(in) || out[1].ECX&(1<<13) != 0 {
			t.Fatalf("HideCX16 alone: %d leaves, ECX %#x", len(out), out[1].ECX)
		}
		out = ApplyCPUIDQuirks(in, Quirks{HideKVMLeaves: true})
		if len(out) != len(in)-3 || out[1].ECX != 0xffffffff {
			t.Fatalf("HideKVMLeaves alone: %d leaves, ECX %#x", len(out), out[1].ECX)
		}
	})
	if !slices.Equal(in, orig) {
		t.Fatal("ApplyCPUIDQuirks modified its input")
	}
}

func TestGuessFromFacts(t *testing.T) {
	for _, tc := range []struct {
		h    hostFacts
		want bool
	}{
		{hostFacts{vmx: true}, false},
		{hostFacts{svm: true}, false},
		{hostFacts{vmx: true, nestedModule: "kvm_pvm"}, false},
		{hostFacts{nestedModule: "kvm_pvm"}, true},
		{hostFacts{}, true},
	} {
		got, why := guessFromFacts(tc.h)
		if got != tc.want || why == "" {
			t.Errorf("guessFromFacts(%+v) = %v, %q; want %v", tc.h, got, why, tc.want)
		}
	}
}
