package hostprobe

import "github.com/govmm/govmm/kvm"

// Quirks are what the VMM changes when guest kernel code is emulated.
type Quirks struct {
	// Assists: complete the instructions KVM's emulator rejects
	// (int3, clac, stac, popcnt) on KVM_EXIT_INTERNAL_ERROR, with
	// package vmm/assist.
	Assists bool
	// HideCX16 clears CPUID.1:ECX.CX16, so the guest does not use
	// cmpxchg16b, which the emulator cannot run.
	HideCX16 bool
	// HideKVMLeaves drops the KVM paravirtual CPUID leaves
	// (0x40000000-0x400000ff): a guest that finds them makes KVM
	// hypercalls that never complete under emulation.
	HideKVMLeaves bool
	// NoXSave appends "noxsave" to the kernel command line: XSAVE cannot
	// be hidden through CPUID there, and xsave/xrstor cannot be emulated.
	NoXSave bool
}

// QuirksFor returns the quirks for a host whose guest kernel code is
// emulated (Report.SupervisorEmulated), or none for a native one.
func QuirksFor(emulated bool) Quirks {
	return Quirks{Assists: emulated, HideCX16: emulated, HideKVMLeaves: emulated, NoXSave: emulated}
}

// Any reports whether any quirk is on.
func (q Quirks) Any() bool { return q.Assists || q.HideCX16 || q.HideKVMLeaves || q.NoXSave }

// KernelArgs returns the kernel command-line words the quirks need.
func (q Quirks) KernelArgs() []string {
	if q.NoXSave {
		return []string{"noxsave"}
	}
	return nil
}

// CPUID leaves and bits the quirks touch.
const (
	cpuidLeafFeatures = 0x1
	cpuidECXCX16      = 1 << 13
	kvmLeavesFirst    = 0x40000000
	kvmLeavesLast     = 0x400000ff
)

// ApplyCPUIDQuirks returns a copy of entries (as from
// kvm.System.SupportedCPUID) edited for q: CX16 cleared in leaf 1, the
// KVM paravirtual leaves removed. entries itself is not modified.
func ApplyCPUIDQuirks(entries []kvm.CPUIDEntry, q Quirks) []kvm.CPUIDEntry {
	out := make([]kvm.CPUIDEntry, 0, len(entries))
	for _, e := range entries {
		if q.HideKVMLeaves && e.Function >= kvmLeavesFirst && e.Function <= kvmLeavesLast {
			continue
		}
		if q.HideCX16 && e.Function == cpuidLeafFeatures {
			e.ECX &^= cpuidECXCX16
		}
		out = append(out, e)
	}
	return out
}
