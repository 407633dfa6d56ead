package kvm

import (
	"testing"
	"unsafe"

	"github.com/govmm/govmm/internal/testutil"
)

// abiTable lists every ioctl number and struct size this package uses,
// with the C expression that defines it in <linux/kvm.h>.
var abiTable = []testutil.ABIValue{
	{C: "KVM_GET_API_VERSION", Got: kvmGetAPIVersion},
	{C: "KVM_CREATE_VM", Got: kvmCreateVM},
	{C: "KVM_CHECK_EXTENSION", Got: kvmCheckExtension},
	{C: "KVM_GET_VCPU_MMAP_SIZE", Got: kvmGetVCPUMmapSize},
	{C: "KVM_GET_SUPPORTED_CPUID", Got: kvmGetSupportedCPUID},
	{C: "KVM_GET_MSR_INDEX_LIST", Got: kvmGetMSRIndexList},
	{C: "KVM_CREATE_VCPU", Got: kvmCreateVCPU},
	{C: "KVM_SET_USER_MEMORY_REGION", Got: kvmSetUserMemoryRegion},
	{C: "KVM_SET_TSS_ADDR", Got: kvmSetTSSAddr},
	{C: "KVM_SET_IDENTITY_MAP_ADDR", Got: kvmSetIdentityMapAddr},
	{C: "KVM_CREATE_IRQCHIP", Got: kvmCreateIRQChip},
	{C: "KVM_IRQ_LINE", Got: kvmIRQLine},
	{C: "KVM_GET_IRQCHIP", Got: kvmGetIRQChip},
	{C: "KVM_SET_IRQCHIP", Got: kvmSetIRQChip},
	{C: "KVM_IRQFD", Got: kvmIRQFD},
	{C: "KVM_CREATE_PIT2", Got: kvmCreatePIT2},
	{C: "KVM_IOEVENTFD", Got: kvmIoeventfd},
	{C: "KVM_SIGNAL_MSI", Got: kvmSignalMSI},
	{C: "KVM_RUN", Got: kvmRun},
	{C: "KVM_GET_REGS", Got: kvmGetRegs},
	{C: "KVM_SET_REGS", Got: kvmSetRegs},
	{C: "KVM_GET_SREGS", Got: kvmGetSregs},
	{C: "KVM_SET_SREGS", Got: kvmSetSregs},
	{C: "KVM_TRANSLATE", Got: kvmTranslate},
	{C: "KVM_GET_MSRS", Got: kvmGetMSRs},
	{C: "KVM_SET_MSRS", Got: kvmSetMSRs},
	{C: "KVM_GET_FPU", Got: kvmGetFPU},
	{C: "KVM_SET_FPU", Got: kvmSetFPU},
	{C: "KVM_GET_LAPIC", Got: kvmGetLAPIC},
	{C: "KVM_SET_LAPIC", Got: kvmSetLAPIC},
	{C: "KVM_SET_CPUID2", Got: kvmSetCPUID2},
	{C: "KVM_GET_MP_STATE", Got: kvmGetMPState},
	{C: "KVM_SET_MP_STATE", Got: kvmSetMPState},
	{C: "KVM_GET_VCPU_EVENTS", Got: kvmGetVCPUEvents},
	{C: "KVM_SET_VCPU_EVENTS", Got: kvmSetVCPUEvents},
	{C: "sizeof(struct kvm_regs)", Got: uint64(unsafe.Sizeof(Regs{}))},
	{C: "sizeof(struct kvm_segment)", Got: uint64(unsafe.Sizeof(Segment{}))},
	{C: "sizeof(struct kvm_dtable)", Got: uint64(unsafe.Sizeof(DTable{}))},
	{C: "sizeof(struct kvm_sregs)", Got: uint64(unsafe.Sizeof(Sregs{}))},
	{C: "sizeof(struct kvm_fpu)", Got: uint64(unsafe.Sizeof(FPU{}))},
	{C: "sizeof(struct kvm_userspace_memory_region)", Got: uint64(unsafe.Sizeof(userspaceMemoryRegion{}))},
	{C: "sizeof(struct kvm_ioeventfd)", Got: uint64(unsafe.Sizeof(ioeventfdArg{}))},
	{C: "sizeof(struct kvm_irqfd)", Got: uint64(unsafe.Sizeof(irqfdArg{}))},
	{C: "sizeof(struct kvm_pit_config)", Got: uint64(unsafe.Sizeof(pitConfig{}))},
	{C: "sizeof(struct kvm_irq_level)", Got: uint64(unsafe.Sizeof(irqLevel{}))},
	{C: "sizeof(struct kvm_msi)", Got: uint64(unsafe.Sizeof(MSI{}))},
	{C: "sizeof(struct kvm_irqchip)", Got: uint64(unsafe.Sizeof(IRQChip{}))},
	{C: "sizeof(struct kvm_cpuid_entry2)", Got: uint64(unsafe.Sizeof(CPUIDEntry{}))},
	{C: "sizeof(struct kvm_cpuid2)", Got: uint64(unsafe.Sizeof(cpuidHeader{}))},
	{C: "sizeof(struct kvm_msr_entry)", Got: uint64(unsafe.Sizeof(MSREntry{}))},
	{C: "sizeof(struct kvm_msrs)", Got: uint64(unsafe.Sizeof(msrsHeader{}))},
	{C: "sizeof(struct kvm_lapic_state)", Got: uint64(unsafe.Sizeof(LAPICState{}))},
	{C: "sizeof(struct kvm_vcpu_events)", Got: uint64(unsafe.Sizeof(VCPUEvents{}))},
	{C: "sizeof(struct kvm_translation)", Got: uint64(unsafe.Sizeof(translation{}))},
	{C: "offsetof(struct kvm_run, immediate_exit)", Got: runImmediateExit},
	{C: "offsetof(struct kvm_run, exit_reason)", Got: runExitReason},
	{C: "offsetof(struct kvm_run, if_flag)", Got: runIfFlag},
	{C: "offsetof(struct kvm_run, io)", Got: runUnion},
	{C: "offsetof(struct kvm_run, io.data_offset)", Got: runIODataOffset},
	{C: "offsetof(struct kvm_run, io.count)", Got: runIOCount},
	{C: "offsetof(struct kvm_run, mmio.data)", Got: runMMIOData},
	{C: "offsetof(struct kvm_run, mmio.len)", Got: runMMIOLen},
	{C: "offsetof(struct kvm_run, mmio.is_write)", Got: runMMIOIsWrite},
	{C: "offsetof(struct kvm_run, internal.ndata)", Got: runInternalNData},
	{C: "offsetof(struct kvm_run, internal.data)", Got: runInternalData},
	{C: "offsetof(struct kvm_run, fail_entry.cpu)", Got: runFailEntryCPU},
	{C: "offsetof(struct kvm_run, system_event.data)", Got: runSystemEventData},
	{C: "offsetof(struct kvm_vcpu_events, exception_payload)", Got: uint64(unsafe.Offsetof(VCPUEvents{}.ExceptionPayload))},
	{C: "offsetof(struct kvm_vcpu_events, sipi_vector)", Got: uint64(unsafe.Offsetof(VCPUEvents{}.SIPIVector))},
	{C: "offsetof(struct kvm_sregs, interrupt_bitmap)", Got: uint64(unsafe.Offsetof(Sregs{}.InterruptBitmap))},
	{C: "offsetof(struct kvm_pic_state, imr)", Got: picStateIMROffset},
	{C: "KVM_CAP_IRQCHIP", Got: uint64(CapIRQChip)},
	{C: "KVM_CAP_HLT", Got: uint64(CapHLT)},
	{C: "KVM_CAP_USER_MEMORY", Got: uint64(CapUserMemory)},
	{C: "KVM_CAP_SET_TSS_ADDR", Got: uint64(CapSetTSSAddr)},
	{C: "KVM_CAP_EXT_CPUID", Got: uint64(CapExtCPUID)},
	{C: "KVM_CAP_NR_VCPUS", Got: uint64(CapNRVCPUs)},
	{C: "KVM_CAP_NR_MEMSLOTS", Got: uint64(CapNRMemSlots)},
	{C: "KVM_CAP_MP_STATE", Got: uint64(CapMPState)},
	{C: "KVM_CAP_IRQFD", Got: uint64(CapIRQFD)},
	{C: "KVM_CAP_PIT2", Got: uint64(CapPIT2)},
	{C: "KVM_CAP_IOEVENTFD", Got: uint64(CapIoeventfd)},
	{C: "KVM_CAP_SET_IDENTITY_MAP_ADDR", Got: uint64(CapSetIdentityMapAddr)},
	{C: "KVM_CAP_VCPU_EVENTS", Got: uint64(CapVCPUEvents)},
	{C: "KVM_CAP_MAX_VCPUS", Got: uint64(CapMaxVCPUs)},
	{C: "KVM_CAP_SIGNAL_MSI", Got: uint64(CapSignalMSI)},
	{C: "KVM_CAP_READONLY_MEM", Got: uint64(CapReadonlyMem)},
	{C: "KVM_CAP_SPLIT_IRQCHIP", Got: uint64(CapSplitIRQChip)},
	{C: "KVM_CAP_IOEVENTFD_ANY_LENGTH", Got: uint64(CapIoeventfdAnyLength)},
	{C: "KVM_CAP_IMMEDIATE_EXIT", Got: uint64(CapImmediateExit)},
	{C: "KVM_IOEVENTFD_FLAG_DATAMATCH", Got: ioeventfdFlagDatamatch},
	{C: "KVM_IOEVENTFD_FLAG_PIO", Got: ioeventfdFlagPIO},
	{C: "KVM_IOEVENTFD_FLAG_DEASSIGN", Got: ioeventfdFlagDeassign},
	{C: "KVM_IRQFD_FLAG_DEASSIGN", Got: irqfdFlagDeassign},
	{C: "KVM_PIT_SPEAKER_DUMMY", Got: pitSpeakerDummy},
	{C: "KVM_EXIT_IO", Got: uint64(ExitIO)},
	{C: "KVM_EXIT_MMIO", Got: uint64(ExitMMIO)},
	{C: "KVM_EXIT_HLT", Got: uint64(ExitHLT)},
	{C: "KVM_EXIT_SHUTDOWN", Got: uint64(ExitShutdown)},
	{C: "KVM_EXIT_FAIL_ENTRY", Got: uint64(ExitFailEntry)},
	{C: "KVM_EXIT_INTR", Got: uint64(ExitIntr)},
	{C: "KVM_EXIT_INTERNAL_ERROR", Got: uint64(ExitInternalError)},
	{C: "KVM_EXIT_SYSTEM_EVENT", Got: uint64(ExitSystemEvent)},
	{C: "KVM_INTERNAL_ERROR_EMULATION", Got: InternalErrorEmulation},
	{C: "KVM_SYSTEM_EVENT_RESET", Got: SystemEventReset},
	{C: "KVM_MP_STATE_SIPI_RECEIVED", Got: MPStateSIPIReceived},
}

// TestABIAgainstKernelHeaders compiles a C program that prints each
// expression of abiTable from <linux/kvm.h> and compares.
func TestABIAgainstKernelHeaders(t *testing.T) {
	testutil.CheckABI(t, "linux/kvm.h", abiTable)
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
