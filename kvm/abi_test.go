package kvm

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/govmm/govmm/internal/testutil"
)

// abiTable lists every ioctl number and struct size this package uses,
// with the C expression that defines it in <linux/kvm.h>.
var abiTable = []struct {
	c   string
	got uint64
}{
	{"KVM_GET_API_VERSION", kvmGetAPIVersion},
	{"KVM_CREATE_VM", kvmCreateVM},
	{"KVM_CHECK_EXTENSION", kvmCheckExtension},
	{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize},
	{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID},
	{"KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList},
	{"KVM_CREATE_VCPU", kvmCreateVCPU},
	{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion},
	{"KVM_SET_TSS_ADDR", kvmSetTSSAddr},
	{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr},
	{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip},
	{"KVM_IRQ_LINE", kvmIRQLine},
	{"KVM_GET_IRQCHIP", kvmGetIRQChip},
	{"KVM_SET_IRQCHIP", kvmSetIRQChip},
	{"KVM_IRQFD", kvmIRQFD},
	{"KVM_CREATE_PIT2", kvmCreatePIT2},
	{"KVM_IOEVENTFD", kvmIoeventfd},
	{"KVM_SIGNAL_MSI", kvmSignalMSI},
	{"KVM_RUN", kvmRun},
	{"KVM_GET_REGS", kvmGetRegs},
	{"KVM_SET_REGS", kvmSetRegs},
	{"KVM_GET_SREGS", kvmGetSregs},
	{"KVM_SET_SREGS", kvmSetSregs},
	{"KVM_TRANSLATE", kvmTranslate},
	{"KVM_GET_MSRS", kvmGetMSRs},
	{"KVM_SET_MSRS", kvmSetMSRs},
	{"KVM_GET_FPU", kvmGetFPU},
	{"KVM_SET_FPU", kvmSetFPU},
	{"KVM_GET_LAPIC", kvmGetLAPIC},
	{"KVM_SET_LAPIC", kvmSetLAPIC},
	{"KVM_SET_CPUID2", kvmSetCPUID2},
	{"KVM_GET_MP_STATE", kvmGetMPState},
	{"KVM_SET_MP_STATE", kvmSetMPState},
	{"KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents},
	{"KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents},
	{"sizeof(struct kvm_regs)", uint64(unsafe.Sizeof(Regs{}))},
	{"sizeof(struct kvm_segment)", uint64(unsafe.Sizeof(Segment{}))},
	{"sizeof(struct kvm_dtable)", uint64(unsafe.Sizeof(DTable{}))},
	{"sizeof(struct kvm_sregs)", uint64(unsafe.Sizeof(Sregs{}))},
	{"sizeof(struct kvm_fpu)", uint64(unsafe.Sizeof(FPU{}))},
	{"sizeof(struct kvm_userspace_memory_region)", uint64(unsafe.Sizeof(userspaceMemoryRegion{}))},
	{"sizeof(struct kvm_ioeventfd)", uint64(unsafe.Sizeof(ioeventfdArg{}))},
	{"sizeof(struct kvm_irqfd)", uint64(unsafe.Sizeof(irqfdArg{}))},
	{"sizeof(struct kvm_pit_config)", uint64(unsafe.Sizeof(pitConfig{}))},
	{"sizeof(struct kvm_irq_level)", uint64(unsafe.Sizeof(irqLevel{}))},
	{"sizeof(struct kvm_msi)", uint64(unsafe.Sizeof(MSI{}))},
	{"sizeof(struct kvm_irqchip)", uint64(unsafe.Sizeof(IRQChip{}))},
	{"sizeof(struct kvm_cpuid_entry2)", uint64(unsafe.Sizeof(CPUIDEntry{}))},
	{"sizeof(struct kvm_cpuid2)", uint64(unsafe.Sizeof(cpuidHeader{}))},
	{"sizeof(struct kvm_msr_entry)", uint64(unsafe.Sizeof(MSREntry{}))},
	{"sizeof(struct kvm_msrs)", uint64(unsafe.Sizeof(msrsHeader{}))},
	{"sizeof(struct kvm_lapic_state)", uint64(unsafe.Sizeof(LAPICState{}))},
	{"sizeof(struct kvm_vcpu_events)", uint64(unsafe.Sizeof(VCPUEvents{}))},
	{"sizeof(struct kvm_translation)", uint64(unsafe.Sizeof(translation{}))},
	{"offsetof(struct kvm_run, immediate_exit)", runImmediateExit},
	{"offsetof(struct kvm_run, exit_reason)", runExitReason},
	{"offsetof(struct kvm_run, if_flag)", runIfFlag},
	{"offsetof(struct kvm_run, io)", runUnion},
	{"offsetof(struct kvm_run, io.data_offset)", runIODataOffset},
	{"offsetof(struct kvm_run, io.count)", runIOCount},
	{"offsetof(struct kvm_run, mmio.data)", runMMIOData},
	{"offsetof(struct kvm_run, mmio.len)", runMMIOLen},
	{"offsetof(struct kvm_run, mmio.is_write)", runMMIOIsWrite},
	{"offsetof(struct kvm_run, internal.ndata)", runInternalNData},
	{"offsetof(struct kvm_run, internal.data)", runInternalData},
	{"offsetof(struct kvm_run, fail_entry.cpu)", runFailEntryCPU},
	{"offsetof(struct kvm_run, system_event.data)", runSystemEventData},
	{"offsetof(struct kvm_vcpu_events, exception_payload)", uint64(unsafe.Offsetof(VCPUEvents{}.ExceptionPayload))},
	{"offsetof(struct kvm_vcpu_events, sipi_vector)", uint64(unsafe.Offsetof(VCPUEvents{}.SIPIVector))},
	{"offsetof(struct kvm_sregs, interrupt_bitmap)", uint64(unsafe.Offsetof(Sregs{}.InterruptBitmap))},
	{"offsetof(struct kvm_pic_state, imr)", picStateIMROffset},
	{"KVM_CAP_IRQCHIP", uint64(CapIRQChip)},
	{"KVM_CAP_HLT", uint64(CapHLT)},
	{"KVM_CAP_USER_MEMORY", uint64(CapUserMemory)},
	{"KVM_CAP_SET_TSS_ADDR", uint64(CapSetTSSAddr)},
	{"KVM_CAP_EXT_CPUID", uint64(CapExtCPUID)},
	{"KVM_CAP_NR_VCPUS", uint64(CapNRVCPUs)},
	{"KVM_CAP_NR_MEMSLOTS", uint64(CapNRMemSlots)},
	{"KVM_CAP_MP_STATE", uint64(CapMPState)},
	{"KVM_CAP_IRQFD", uint64(CapIRQFD)},
	{"KVM_CAP_PIT2", uint64(CapPIT2)},
	{"KVM_CAP_IOEVENTFD", uint64(CapIoeventfd)},
	{"KVM_CAP_SET_IDENTITY_MAP_ADDR", uint64(CapSetIdentityMapAddr)},
	{"KVM_CAP_VCPU_EVENTS", uint64(CapVCPUEvents)},
	{"KVM_CAP_MAX_VCPUS", uint64(CapMaxVCPUs)},
	{"KVM_CAP_SIGNAL_MSI", uint64(CapSignalMSI)},
	{"KVM_CAP_READONLY_MEM", uint64(CapReadonlyMem)},
	{"KVM_CAP_SPLIT_IRQCHIP", uint64(CapSplitIRQChip)},
	{"KVM_CAP_IOEVENTFD_ANY_LENGTH", uint64(CapIoeventfdAnyLength)},
	{"KVM_CAP_IMMEDIATE_EXIT", uint64(CapImmediateExit)},
	{"KVM_IOEVENTFD_FLAG_DATAMATCH", ioeventfdFlagDatamatch},
	{"KVM_IOEVENTFD_FLAG_PIO", ioeventfdFlagPIO},
	{"KVM_IOEVENTFD_FLAG_DEASSIGN", ioeventfdFlagDeassign},
	{"KVM_IRQFD_FLAG_DEASSIGN", irqfdFlagDeassign},
	{"KVM_PIT_SPEAKER_DUMMY", pitSpeakerDummy},
	{"KVM_EXIT_IO", uint64(ExitIO)},
	{"KVM_EXIT_MMIO", uint64(ExitMMIO)},
	{"KVM_EXIT_HLT", uint64(ExitHLT)},
	{"KVM_EXIT_SHUTDOWN", uint64(ExitShutdown)},
	{"KVM_EXIT_FAIL_ENTRY", uint64(ExitFailEntry)},
	{"KVM_EXIT_INTR", uint64(ExitIntr)},
	{"KVM_EXIT_INTERNAL_ERROR", uint64(ExitInternalError)},
	{"KVM_EXIT_SYSTEM_EVENT", uint64(ExitSystemEvent)},
	{"KVM_INTERNAL_ERROR_EMULATION", InternalErrorEmulation},
	{"KVM_SYSTEM_EVENT_RESET", SystemEventReset},
	{"KVM_MP_STATE_SIPI_RECEIVED", MPStateSIPIReceived},
}

// TestABIAgainstKernelHeaders compiles a C program that prints each
// expression of abiTable from <linux/kvm.h> and compares.
func TestABIAgainstKernelHeaders(t *testing.T) {
	cc := testutil.RequireCommand(t, "gcc")
	if _, err := os.Stat("/usr/include/linux/kvm.h"); err != nil {
		t.Skipf("linux/kvm.h not installed: %v", err)
	}
	dir := t.TempDir()
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void){\n")
	for _, e := range abiTable {
		src.WriteString("printf(\"%llu\\n\", (unsigned long long)(" + e.c + "));\n")
	}
	src.WriteString("return 0;}\n")
	cfile := filepath.Join(dir, "abi.c")
	if err := os.WriteFile(cfile, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "abi")
	if out, err := exec.Command(cc, "-o", bin, cfile).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run abi: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for i := 0; sc.Scan(); i++ {
		want, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := abiTable[i].got; got != want {
			t.Errorf("%s = %#x, kernel header says %#x", abiTable[i].c, got, want)
		}
	}
}

// TestKnownValues pins a few numbers from the reference documents, so the
// check runs even without a C compiler.
func TestKnownValues(t *testing.T) {
	if kvmIoeventfd != 0x4040AE79 {
		t.Errorf("KVM_IOEVENTFD = %#x, want 0x4040AE79", kvmIoeventfd)
	}
	if unsafe.Sizeof(ioeventfdArg{}) != 64 {
		t.Errorf("sizeof(kvm_ioeventfd) = %d, want 64", unsafe.Sizeof(ioeventfdArg{}))
	}
	if kvmRun != 0xAE80 {
		t.Errorf("KVM_RUN = %#x, want 0xAE80", kvmRun)
	}
}
