package vmm

import (
	"testing"
)

func TestDecideQuirks(t *testing.T) {
	emulated := func() (bool, string) { return true, "no vmx" }
	native := func() (bool, string) { return false, "vmx" }
	for _, tc := range []struct {
		mode  QuirksMode
		guess func() (bool, string)
		want  bool
	}{
		{QuirksAuto, emulated, true},
		{QuirksAuto, native, false},
		{QuirksOn, native, true},
		{QuirksOff, emulated, false},
	} {
		q, why := decideQuirks(tc.mode, tc.guess)
		if q.Assists != tc.want || q.HideCX16 != tc.want || q.HideKVMLeaves != tc.want || q.NoXSave != tc.want || why == "" {
			t.Errorf("decideQuirks(%v) = %+v (%s), want all %v", tc.mode, q, why, tc.want)
		}
	}
}

func TestWithKernelArgs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"console=ttyS0", "console=ttyS0 noxsave"},
		{"console=ttyS0 noxsave", "console=ttyS0 noxsave"},
		{"", "noxsave"},
	} {
		if got := withKernelArgs(tc.in, []string{"noxsave"}); got != tc.want {
			t.Errorf("withKernelArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := withKernelArgs("a b", nil); got != "a b" {
		t.Errorf("no args changed the command line: %q", got)
	}
}

func TestParseQuirksMode(t *testing.T) {
	for in, want := range map[string]QuirksMode{"auto": QuirksAuto, "on": QuirksOn, "off": QuirksOff} {
		if got, err := ParseQuirksMode(in); err != nil || got != want {
			t.Errorf("ParseQuirksMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseQuirksMode("maybe"); err == nil {
		t.Error("ParseQuirksMode(maybe) accepted")
	}
}
