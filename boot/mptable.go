package boot

import "fmt"

// MaxCPUs is the most CPUs the MP table can describe: local APIC IDs are
// 8 bits, 0xFF is the broadcast ID, and the IOAPIC takes the ID after the
// last CPU.
const MaxCPUs = 254

// MP table layout (Intel MultiProcessor Specification 1.4, chapter 4).
const (
	mpFloatSize   = 16
	mpHeaderSize  = 44
	mpCPUSize     = 20
	mpEntrySize   = 8 // bus, I/O APIC, I/O and local interrupt entries
	mpSpecRev     = 4 // version 1.4
	mpLocalInts   = 2 // ExtINT on LINT0, NMI on LINT1
	mpEntryCPU    = 0
	mpEntryBus    = 1
	mpEntryIOAPIC = 2
	mpEntryIOInt  = 3
	mpEntryLInt   = 4

	mpIntINT    = 0
	mpIntNMI    = 1
	mpIntExtINT = 3

	mpCPUEnabled = 1 << 0
	mpCPUBSP     = 1 << 1
	mpIOAPICEn   = 1 << 0
	mpAllAPICs   = 0xFF

	mpISABusID = 0

	// What the processor entries claim: family 6, FPU and APIC present.
	mpCPUSignature = 6 << 8
	mpCPUFeatures  = 1<<0 | 1<<9
	// Versions of KVM's in-kernel local APIC and IOAPIC.
	lapicVersion  = 0x14
	ioapicVersion = 0x11

	mpOEMID     = "GOVMM   "     // 8 bytes
	mpProductID = "GOVMM VM    " // 12 bytes
)

// mpConfigSize is the size of the MP configuration table for cpus CPUs.
func mpConfigSize(cpus int) int {
	return mpHeaderSize + cpus*mpCPUSize + (1+1+IOAPICPins+mpLocalInts)*mpEntrySize
}

// WriteMPTable writes an MP floating pointer at MPTableAddr and the
// configuration table at MPConfigAddr into lowMem (guest-physical 0 up):
// one enabled processor per CPU (APIC ID = index, CPU 0 the BSP), an ISA
// bus, the IOAPIC (ID = cpus) at IOAPICAddr with ISA IRQs and GSIs 0-23
// routed to its pins of the same number (virtio devices use 5 and up), and
// ExtINT/NMI on every local APIC's LINT0/LINT1.
func WriteMPTable(lowMem []byte, cpus int) error {
	if cpus < 1 || cpus > MaxCPUs {
		return fmt.Errorf("write MP table: %d CPUs, want 1 to %d", cpus, MaxCPUs)
	}
	size := mpConfigSize(cpus)
	if end := MPConfigAddr + size; len(lowMem) < end {
		return fmt.Errorf("write MP table: needs guest memory up to %#x, have %d bytes: %w", end, len(lowMem), ErrNoFit)
	}

	t := lowMem[MPConfigAddr : MPConfigAddr+size]
	clear(t)
	copy(t[0:], "PCMP")
	put16(t, 4, uint16(size))
	t[6] = mpSpecRev
	copy(t[8:16], mpOEMID)
	copy(t[16:28], mpProductID)
	put16(t, 34, uint16(cpus+2+IOAPICPins+mpLocalInts))
	put32(t, 36, LAPICAddr)

	e := t[mpHeaderSize:]
	for i := range cpus {
		flags := uint8(mpCPUEnabled)
		if i == 0 {
			flags |= mpCPUBSP
		}
		e[0] = mpEntryCPU
		e[1] = uint8(i)
		e[2] = lapicVersion
		e[3] = flags
		put32(e, 4, mpCPUSignature)
		put32(e, 8, mpCPUFeatures)
		e = e[mpCPUSize:]
	}
	ioapicID := uint8(cpus)

	e[0] = mpEntryBus
	e[1] = mpISABusID
	copy(e[2:8], "ISA   ")
	e = e[mpEntrySize:]

	e[0] = mpEntryIOAPIC
	e[1] = ioapicID
	e[2] = ioapicVersion
	e[3] = mpIOAPICEn
	put32(e, 4, IOAPICAddr)
	e = e[mpEntrySize:]

	// Flags 0: polarity and trigger mode conform to the bus (ISA: active
	// high, edge), which is what irqfd-driven virtio interrupts need too.
	for irq := range IOAPICPins {
		e[0] = mpEntryIOInt
		e[1] = mpIntINT
		e[4] = mpISABusID
		e[5] = uint8(irq)
		e[6] = ioapicID
		e[7] = uint8(irq)
		e = e[mpEntrySize:]
	}

	for lint, typ := range []uint8{mpIntExtINT, mpIntNMI} {
		e[0] = mpEntryLInt
		e[1] = typ
		e[4] = mpISABusID
		e[5] = 0
		e[6] = mpAllAPICs
		e[7] = uint8(lint)
		e = e[mpEntrySize:]
	}
	t[7] = checksum(t)

	f := lowMem[MPTableAddr : MPTableAddr+mpFloatSize]
	clear(f)
	copy(f, "_MP_")
	put32(f, 4, MPConfigAddr)
	f[8] = 1 // length in 16-byte units
	f[9] = mpSpecRev
	// Feature bytes 0: a configuration table is present; virtual-wire mode
	// (no IMCR).
	f[10] = checksum(f)
	return nil
}

// checksum returns the byte that makes the sum of b (whose checksum byte is
// still 0) zero modulo 256.
func checksum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return -s
}
