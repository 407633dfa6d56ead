package kvm

// ioctl request numbers, built the way <asm-generic/ioctl.h> builds them so
// that each number carries its direction and argument size. abi_test.go
// compares every value with the kernel header.

const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30

	kvmio = 0xAE
)

// Direction prefixes for the const expressions below: _IO, _IOR, _IOW and
// _IOWR of <asm-generic/ioctl.h> with the KVM type 0xAE already applied.
// A request is prefix | size<<iocSizeShift | nr.
const (
	kIO   = iocNone<<iocDirShift | kvmio<<iocTypeShift
	kIOR  = iocRead<<iocDirShift | kvmio<<iocTypeShift
	kIOW  = iocWrite<<iocDirShift | kvmio<<iocTypeShift
	kIOWR = (iocRead|iocWrite)<<iocDirShift | kvmio<<iocTypeShift
)

// System ioctls (on /dev/kvm).
const (
	kvmGetAPIVersion     = kIO | 0x00
	kvmCreateVM          = kIO | 0x01
	kvmCheckExtension    = kIO | 0x03
	kvmGetVCPUMmapSize   = kIO | 0x04
	kvmGetSupportedCPUID = kIOWR | sizeofCPUIDHeader<<iocSizeShift | 0x05 // needs KVM_CAP_EXT_CPUID
	kvmGetMSRIndexList   = kIOWR | sizeofMSRListHeader<<iocSizeShift | 0x02
)

// VM ioctls.
const (
	kvmCreateVCPU          = kIO | 0x41
	kvmSetUserMemoryRegion = kIOW | sizeofUserspaceMemoryRegion<<iocSizeShift | 0x46 // needs KVM_CAP_USER_MEMORY
	kvmSetTSSAddr          = kIO | 0x47                                              // needs KVM_CAP_SET_TSS_ADDR
	kvmSetIdentityMapAddr  = kIOW | 8<<iocSizeShift | 0x48                           // needs KVM_CAP_SET_IDENTITY_MAP_ADDR
	kvmCreateIRQChip       = kIO | 0x60                                              // needs KVM_CAP_IRQCHIP
	kvmIRQLine             = kIOW | sizeofIRQLevel<<iocSizeShift | 0x61              // needs KVM_CAP_IRQCHIP
	kvmGetIRQChip          = kIOWR | sizeofIRQChip<<iocSizeShift | 0x62              // needs KVM_CAP_IRQCHIP
	kvmSetIRQChip          = kIOR | sizeofIRQChip<<iocSizeShift | 0x63               // needs KVM_CAP_IRQCHIP (the header really says _IOR)
	kvmIRQFD               = kIOW | sizeofIRQFD<<iocSizeShift | 0x76                 // needs KVM_CAP_IRQFD
	kvmCreatePIT2          = kIOW | sizeofPITConfig<<iocSizeShift | 0x77             // needs KVM_CAP_PIT2
	kvmIoeventfd           = kIOW | sizeofIoeventfd<<iocSizeShift | 0x79             // needs KVM_CAP_IOEVENTFD
	kvmSignalMSI           = kIOW | sizeofMSI<<iocSizeShift | 0xa5                   // needs KVM_CAP_SIGNAL_MSI
)

// vCPU ioctls.
const (
	kvmRun           = kIO | 0x80
	kvmGetRegs       = kIOR | sizeofRegs<<iocSizeShift | 0x81
	kvmSetRegs       = kIOW | sizeofRegs<<iocSizeShift | 0x82
	kvmGetSregs      = kIOR | sizeofSregs<<iocSizeShift | 0x83
	kvmSetSregs      = kIOW | sizeofSregs<<iocSizeShift | 0x84
	kvmTranslate     = kIOWR | sizeofTranslation<<iocSizeShift | 0x85
	kvmGetMSRs       = kIOWR | sizeofMSRsHeader<<iocSizeShift | 0x88
	kvmSetMSRs       = kIOW | sizeofMSRsHeader<<iocSizeShift | 0x89
	kvmGetFPU        = kIOR | sizeofFPU<<iocSizeShift | 0x8c
	kvmSetFPU        = kIOW | sizeofFPU<<iocSizeShift | 0x8d
	kvmGetLAPIC      = kIOR | sizeofLAPICState<<iocSizeShift | 0x8e // needs KVM_CAP_IRQCHIP
	kvmSetLAPIC      = kIOW | sizeofLAPICState<<iocSizeShift | 0x8f // needs KVM_CAP_IRQCHIP
	kvmSetCPUID2     = kIOW | sizeofCPUIDHeader<<iocSizeShift | 0x90
	kvmGetMPState    = kIOR | 4<<iocSizeShift | 0x98                // needs KVM_CAP_MP_STATE
	kvmSetMPState    = kIOW | 4<<iocSizeShift | 0x99                // needs KVM_CAP_MP_STATE
	kvmGetVCPUEvents = kIOR | sizeofVCPUEvents<<iocSizeShift | 0x9f // needs KVM_CAP_VCPU_EVENTS
	kvmSetVCPUEvents = kIOW | sizeofVCPUEvents<<iocSizeShift | 0xa0 // needs KVM_CAP_VCPU_EVENTS
)

// Cap is a KVM capability number for CheckExtension.
type Cap uintptr

// Capabilities govmm relies on (values from <linux/kvm.h>).
const (
	CapIRQChip            Cap = 0
	CapHLT                Cap = 1
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNRVCPUs            Cap = 9
	CapNRMemSlots         Cap = 10
	CapMPState            Cap = 14
	CapIRQFD              Cap = 32
	CapPIT2               Cap = 33
	CapIoeventfd          Cap = 36
	CapSetIdentityMapAddr Cap = 37
	CapVCPUEvents         Cap = 41
	CapMaxVCPUs           Cap = 66
	CapSignalMSI          Cap = 77
	CapReadonlyMem        Cap = 81
	CapSplitIRQChip       Cap = 121
	CapIoeventfdAnyLength Cap = 122
	CapImmediateExit      Cap = 136
)

func (c Cap) String() string {
	switch c {
	case CapIRQChip:
		return "KVM_CAP_IRQCHIP"
	case CapHLT:
		return "KVM_CAP_HLT"
	case CapUserMemory:
		return "KVM_CAP_USER_MEMORY"
	case CapSetTSSAddr:
		return "KVM_CAP_SET_TSS_ADDR"
	case CapExtCPUID:
		return "KVM_CAP_EXT_CPUID"
	case CapNRVCPUs:
		return "KVM_CAP_NR_VCPUS"
	case CapNRMemSlots:
		return "KVM_CAP_NR_MEMSLOTS"
	case CapMPState:
		return "KVM_CAP_MP_STATE"
	case CapIRQFD:
		return "KVM_CAP_IRQFD"
	case CapPIT2:
		return "KVM_CAP_PIT2"
	case CapIoeventfd:
		return "KVM_CAP_IOEVENTFD"
	case CapSetIdentityMapAddr:
		return "KVM_CAP_SET_IDENTITY_MAP_ADDR"
	case CapVCPUEvents:
		return "KVM_CAP_VCPU_EVENTS"
	case CapMaxVCPUs:
		return "KVM_CAP_MAX_VCPUS"
	case CapSignalMSI:
		return "KVM_CAP_SIGNAL_MSI"
	case CapReadonlyMem:
		return "KVM_CAP_READONLY_MEM"
	case CapSplitIRQChip:
		return "KVM_CAP_SPLIT_IRQCHIP"
	case CapIoeventfdAnyLength:
		return "KVM_CAP_IOEVENTFD_ANY_LENGTH"
	case CapImmediateExit:
		return "KVM_CAP_IMMEDIATE_EXIT"
	}
	return "KVM_CAP_" + itoa(uint64(c))
}

// RequiredCaps returns the capabilities without which govmm cannot run a VM.
func RequiredCaps() []Cap {
	return []Cap{CapUserMemory, CapIRQChip, CapIoeventfd, CapIRQFD, CapPIT2, CapSetTSSAddr, CapSetIdentityMapAddr, CapImmediateExit, CapVCPUEvents}
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}
