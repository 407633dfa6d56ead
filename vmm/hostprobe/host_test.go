package hostprobe

import (
	"strings"
	"testing"
	"testing/fstest"
)

const intelCPUInfo = `processor	: 0
vendor_id	: GenuineIntel
flags		: fpu vme de pse tsc msr pae mce cx8 apic vmx smx est tm2 ssse3
vmx flags	: vnmi preemption_timer invvpid ept_x_only
bugs		: spectre_v1

processor	: 1
flags		: fpu vme de pse tsc msr pae mce cx8 apic vmx smx est tm2 ssse3
`

const amdCPUInfo = `processor	: 0
vendor_id	: AuthenticAMD
flags		: fpu vme de pse tsc msr pae mce cx8 apic svm extapic cr8_legacy
`

const plainCPUInfo = `processor	: 0
vendor_id	: GenuineIntel
flags		: fpu vme de pse tsc msr pae mce cx8 apic hypervisor svmx vmxx
vmx flags	: vnmi
`

func TestCPUVirtFlags(t *testing.T) {
	cases := []struct {
		name     string
		in       string
		vmx, svm bool
	}{
		{"intel", intelCPUInfo, true, false},
		{"amd", amdCPUInfo, false, true},
		{"neither (and a vmx flags line does not count)", plainCPUInfo, false, false},
		{"empty", "", false, false},
		{"garbage", "flags\nflags:\n::::\n\x00\xff", false, false},
	}
	for _, c := range cases {
		vmx, svm := cpuVirtFlags(strings.NewReader(c.in))
		if vmx != c.vmx || svm != c.svm {
			t.Errorf("%s: vmx %v svm %v, want %v %v", c.name, vmx, svm, c.vmx, c.svm)
		}
	}
}

func TestReadHostFacts(t *testing.T) {
	cases := []struct {
		name string
		fs   fstest.MapFS
		want hostFacts
	}{
		{"nested pvm", fstest.MapFS{
			"proc/cpuinfo":                  {Data: []byte(plainCPUInfo)},
			"sys/module/kvm_pvm/parameters": {Mode: 0o555 | 1<<31},
			"sys/module/kvm/refcnt":         {Data: []byte("1\n")},
		}, hostFacts{nestedModule: "kvm_pvm"}},
		{"intel bare metal", fstest.MapFS{
			"proc/cpuinfo":                {Data: []byte(intelCPUInfo)},
			"sys/module/kvm_intel/refcnt": {Data: []byte("1\n")},
		}, hostFacts{vmx: true}},
		{"nothing readable", fstest.MapFS{}, hostFacts{}},
	}
	for _, c := range cases {
		if got := readHostFacts(c.fs); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}
