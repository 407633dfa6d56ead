package kvm

import "unsafe"

// Sizes of the C structs, as constants so that the ioctl numbers in
// ioctls.go can be constant expressions. sizes_test.go checks each against
// unsafe.Sizeof of its mirror, and abi_test.go against the C compiler.
const (
	sizeofRegs                  = 144
	sizeofSegment               = 24
	sizeofDTable                = 16
	sizeofSregs                 = 312
	sizeofFPU                   = 416
	sizeofUserspaceMemoryRegion = 32
	sizeofIoeventfd             = 64
	sizeofIRQFD                 = 32
	sizeofPITConfig             = 64
	sizeofIRQLevel              = 8
	sizeofMSI                   = 32
	sizeofIRQChip               = 520
	sizeofCPUIDHeader           = 8
	sizeofCPUIDEntry            = 40
	sizeofMSRsHeader            = 8
	sizeofMSREntry              = 16
	sizeofMSRListHeader         = 4
	sizeofLAPICState            = 1024
	sizeofVCPUEvents            = 64
	sizeofTranslation           = 24
)

// Regs mirrors struct kvm_regs (general-purpose registers).
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment mirrors struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8 // padding
}

// DTable mirrors struct kvm_dtable (GDTR/IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16 // padding
}

// Sregs mirrors struct kvm_sregs (segment and control registers).
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8, EFER, APICBase    uint64
	InterruptBitmap        [4]uint64 // (KVM_NR_INTERRUPTS + 63) / 64
}

// FPU mirrors struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8 // pad1
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32 // pad2
}

// userspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// ioeventfdArg mirrors struct kvm_ioeventfd.
type ioeventfdArg struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8 // pad
}

// kvm_ioeventfd flags.
const (
	ioeventfdFlagDatamatch = 1 << 0
	ioeventfdFlagPIO       = 1 << 1
	ioeventfdFlagDeassign  = 1 << 2
)

// irqfdArg mirrors struct kvm_irqfd.
type irqfdArg struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8 // pad
}

const irqfdFlagDeassign = 1 << 0

// pitConfig mirrors struct kvm_pit_config.
type pitConfig struct {
	Flags uint32
	_     [15]uint32 // pad
}

// PIT speaker port emulated as a dummy (KVM_PIT_SPEAKER_DUMMY).
const pitSpeakerDummy = 1

// irqLevel mirrors struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// MSI mirrors struct kvm_msi.
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8 // pad
}

// IRQChip mirrors struct kvm_irqchip: ChipID selects the PIC master (0),
// PIC slave (1) or IOAPIC (2); Data is the raw union (struct
// kvm_pic_state or struct kvm_ioapic_state).
type IRQChip struct {
	ChipID uint32
	_      uint32 // pad
	Data   [512]uint8
}

// IRQ chip identifiers for IRQChip.ChipID.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// Offset of imr in struct kvm_pic_state (last_irr, irr, imr, ...).
const picStateIMROffset = 2

// CPUIDEntry mirrors struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32 // padding
}

// CPUIDFlagSignificantIndex is KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry
// applies only to the sub-leaf in Index.
const CPUIDFlagSignificantIndex = 1 << 0

// cpuidHeader mirrors the fixed part of struct kvm_cpuid2.
type cpuidHeader struct {
	NEnt uint32
	_    uint32 // padding
}

// MSREntry mirrors struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32 // reserved
	Data  uint64
}

// msrsHeader mirrors the fixed part of struct kvm_msrs.
type msrsHeader struct {
	NMSRs uint32
	_     uint32 // pad
}

// LAPICState mirrors struct kvm_lapic_state: the 1 KiB register page.
type LAPICState struct {
	Regs [1024]uint8
}

// VCPUEvents mirrors struct kvm_vcpu_events (pending exceptions,
// interrupts and NMIs).
type VCPUEvents struct {
	Exception struct {
		Injected     uint8
		Nr           uint8
		HasErrorCode uint8
		Pending      uint8
		ErrorCode    uint32
	}
	Interrupt struct {
		Injected uint8
		Nr       uint8
		Soft     uint8
		Shadow   uint8
	}
	NMI struct {
		Injected uint8
		Pending  uint8
		Masked   uint8
		_        uint8 // pad
	}
	SIPIVector uint32
	Flags      uint32
	SMI        struct {
		SMM          uint8
		Pending      uint8
		SMMInsideNMI uint8
		LatchedInit  uint8
	}
	TripleFaultPending  uint8
	_                   [26]uint8 // reserved
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// translation mirrors struct kvm_translation.
type translation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	Usermode        uint8
	_               [5]uint8 // pad
}

// kvm_run layout (struct kvm_run, x86_64): the fixed header, then a
// 256-byte union at offset 32 whose member is selected by exit_reason.
const (
	runImmediateExit = 1
	runExitReason    = 8
	runIfFlag        = 13
	runUnion         = 32

	// KVM_EXIT_IO: direction u8, size u8, port u16, count u32, data_offset u64.
	runIODirection  = runUnion + 0
	runIOSize       = runUnion + 1
	runIOPort       = runUnion + 2
	runIOCount      = runUnion + 4
	runIODataOffset = runUnion + 8

	// KVM_EXIT_MMIO: phys_addr u64, data [8]u8, len u32, is_write u8.
	runMMIOPhysAddr = runUnion + 0
	runMMIOData     = runUnion + 8
	runMMIOLen      = runUnion + 16
	runMMIOIsWrite  = runUnion + 20

	// KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason u64, cpu u32.
	runFailEntryReason = runUnion + 0
	runFailEntryCPU    = runUnion + 8

	// KVM_EXIT_INTERNAL_ERROR: suberror u32, ndata u32, data [16]u64.
	runInternalSuberror = runUnion + 0
	runInternalNData    = runUnion + 4
	runInternalData     = runUnion + 8

	// KVM_EXIT_SYSTEM_EVENT: type u32, ndata u32, data [16]u64.
	runSystemEventType  = runUnion + 0
	runSystemEventNData = runUnion + 4
	runSystemEventData  = runUnion + 8
)

// Compile-time size checks: a mismatch makes an array length negative.
var (
	_ [sizeofRegs - unsafe.Sizeof(Regs{})]byte
	_ [unsafe.Sizeof(Regs{}) - sizeofRegs]byte
	_ [sizeofSregs - unsafe.Sizeof(Sregs{})]byte
	_ [unsafe.Sizeof(Sregs{}) - sizeofSregs]byte
	_ [sizeofFPU - unsafe.Sizeof(FPU{})]byte
	_ [unsafe.Sizeof(FPU{}) - sizeofFPU]byte
	_ [sizeofIoeventfd - unsafe.Sizeof(ioeventfdArg{})]byte
	_ [unsafe.Sizeof(ioeventfdArg{}) - sizeofIoeventfd]byte
	_ [sizeofVCPUEvents - unsafe.Sizeof(VCPUEvents{})]byte
	_ [unsafe.Sizeof(VCPUEvents{}) - sizeofVCPUEvents]byte
	_ [sizeofIRQChip - unsafe.Sizeof(IRQChip{})]byte
	_ [unsafe.Sizeof(IRQChip{}) - sizeofIRQChip]byte
	_ [sizeofCPUIDEntry - unsafe.Sizeof(CPUIDEntry{})]byte
	_ [unsafe.Sizeof(CPUIDEntry{}) - sizeofCPUIDEntry]byte
)
