package boot

// Guest-physical memory layout. This is the only drawing of it; every
// address below is a constant in this file.
//
//	0x0000_0000 +------------------------------------+
//	            | real-mode IVT and BIOS data area   | left zero
//	0x0000_0500 | GDT: null, null, code 0x10,        | GDTAddr
//	            |      data 0x18, TSS 0x20 (16 B)    |
//	0x0000_0540 | IDT (empty: limit 0)               | IDTAddr
//	0x0000_0580 | boot TSS (104 bytes)               | BootTSSAddr
//	0x0000_1000 | boot stack (24 KiB), grows down    |
//	0x0000_7000 | zero page (struct boot_params)     | ZeroPageAddr = BootStackTop
//	0x0000_8000 | (unused)                           |
//	0x0000_9000 | PML4                               | PML4Addr
//	0x0000_A000 | PDPT (4 entries)                   | PDPTAddr
//	0x0000_B000 | 4 page directories, 2 MiB pages,   | PDAddr
//	            | identity map of 0..4 GiB           |
//	0x0000_F000 | free                               | BootStructEnd
//	0x0002_0000 | kernel command line (64 KiB area)  | CmdlineAddr
//	0x0003_0000 | free                               |
//	0x0009_FC00 +------------------------------------+ EBDAStart: e820 reserved
//	            | MP floating pointer ("_MP_")       | MPTableAddr
//	0x000A_0000 | legacy VGA / option ROM hole       | (guest RAM, unused)
//	0x000F_0000 | MP configuration table ("PCMP")    | MPConfigAddr
//	0x0010_0000 +------------------------------------+ HighMemStart: e820 RAM
//	            | kernel: ELF PT_LOAD segments at    |
//	            | p_paddr, or the bzImage protected- |
//	            | mode part at pref_address / an     |
//	            | aligned address                    |
//	            |               ...                  |
//	            | initrd, page aligned, as high as   |
//	            | it fits                            |
//	            +------------------------------------+ min(MemSize, MMIOGapStart)
//	0xC000_0000 | MMIO gap (no RAM)                  | MMIOGapStart
//	0xD000_0000 |   virtio-mmio device i at          | VirtioMMIOBase
//	            |   base + i*0x1000, IRQ 5+i         |
//	0xFEC0_0000 |   IOAPIC                           | IOAPICAddr
//	0xFEE0_0000 |   local APIC                       | LAPICAddr
//	0xFFFB_C000 |   KVM identity-map page (1 page)   | IdentityMapAddr
//	0xFFFB_D000 |   KVM real-mode TSS (3 pages)      | TSSAddr
//	0x1_0000_0000 +----------------------------------+ MMIOGapEnd
//	            | RAM above 4 GiB: MemSize - 3 GiB,  |
//	            | when MemSize > MMIOGapStart        |
//	            +------------------------------------+
//
// Everything below 1 MiB except the EBDA/BIOS area is marked usable in the
// e820 map: Linux reserves the first megabyte for itself and copies the
// zero page and command line out early.
const (
	// GDTAddr holds the boot GDT; see BootCSSelector and friends.
	GDTAddr = 0x0500
	// GDTSize is the size of the boot GDT in bytes (six 8-byte slots; the
	// TSS descriptor takes two).
	GDTSize = 6 * 8
	// IDTAddr is the base of the empty boot IDT. Its limit is 0, so any
	// exception before the kernel installs its own IDT escalates to a
	// triple fault, which KVM reports as a shutdown exit.
	IDTAddr = 0x0540
	// BootTSSAddr is the 64-bit TSS that TR points at on entry (all zero:
	// no stacks, I/O map beyond the limit).
	BootTSSAddr = 0x0580
	// BootTSSSize is the size of a 64-bit TSS.
	BootTSSSize = 0x68
	// BootStackTop is the initial RSP. The stack is [0x1000, 0x7000).
	BootStackTop = 0x7000
	// ZeroPageAddr holds struct boot_params; RSI points here on entry.
	ZeroPageAddr = 0x7000
	// ZeroPageSize is the size of struct boot_params.
	ZeroPageSize = 0x1000
	// PML4Addr is the top-level page table; CR3 on entry.
	PML4Addr = 0x9000
	// PDPTAddr is the single page-directory-pointer table.
	PDPTAddr = 0xA000
	// PDAddr is the first of PDCount page directories of 2 MiB pages.
	PDAddr = 0xB000
	// PDCount page directories map 0..4 GiB.
	PDCount = 4
	// BootStructEnd is the end of the block of boot structures that starts
	// at address 0 (IVT, GDT, IDT, TSS, stack, zero page, page tables).
	BootStructEnd = 0xF000

	// CmdlineAddr is where the NUL-terminated kernel command line goes.
	CmdlineAddr = 0x20000
	// CmdlineAreaSize is the room reserved at CmdlineAddr, NUL included.
	CmdlineAreaSize = 0x10000
	// MaxCmdline is the command-line buffer size, NUL included, for ELF
	// kernels (Linux's COMMAND_LINE_SIZE on x86). A bzImage states its own
	// limit in the setup header's cmdline_size.
	MaxCmdline = 2048

	// EBDAStart is the start of the area e820 marks reserved below 1 MiB:
	// the last KiB of 640 KiB base memory, the VGA hole and the BIOS area.
	EBDAStart = 0x9FC00
	// MPTableAddr holds the MP floating pointer structure, in the last KiB
	// of base memory where Linux scans for it.
	MPTableAddr = EBDAStart
	// MPConfigAddr holds the MP configuration table the floating pointer
	// points at. It lives in the 64 KiB BIOS area, which fits the table for
	// MaxCPUs processors (the last KiB of base memory would fit only ~37).
	MPConfigAddr = 0xF0000
	// HighMemStart is 1 MiB, the start of "high" memory in boot-protocol
	// terms and the lowest address a kernel or initrd is placed at.
	HighMemStart = 0x100000

	// MMIOGapStart and MMIOGapEnd bound the hole below 4 GiB where no RAM
	// is mapped; RAM beyond MMIOGapStart continues at MMIOGapEnd.
	MMIOGapStart = 0xC000_0000
	MMIOGapEnd   = 0x1_0000_0000
	// VirtioMMIOBase is the first virtio-mmio device window; device i
	// sits at VirtioMMIOBase + i*VirtioMMIOStride and uses IRQ
	// VirtioFirstIRQ + i.
	VirtioMMIOBase   = 0xD000_0000
	VirtioMMIOStride = 0x1000
	// VirtioFirstIRQ is the first GSI for virtio devices: IRQs 0-4 are the
	// PIT, keyboard, cascade and serial ports.
	VirtioFirstIRQ = 5
	// IOAPICPins is the number of IOAPIC inputs (GSIs 0-23) the MP table
	// routes.
	IOAPICPins = 24
	// MaxVirtioDevices is how many virtio-mmio devices get a GSI of their
	// own through the IOAPIC.
	MaxVirtioDevices = IOAPICPins - VirtioFirstIRQ
	// IOAPICAddr and LAPICAddr are the architectural APIC windows.
	IOAPICAddr = 0xFEC0_0000
	LAPICAddr  = 0xFEE0_0000
	// IdentityMapAddr is for KVM_SET_IDENTITY_MAP_ADDR (one page) and
	// TSSAddr for KVM_SET_TSS_ADDR (three pages); Intel hosts use them to
	// emulate real mode. Both lie in the MMIO gap, away from RAM and
	// devices.
	IdentityMapAddr = 0xFFFB_C000
	TSSAddr         = 0xFFFB_D000
)

// Selectors of the boot GDT. The 64-bit boot protocol requires __BOOT_CS
// at 0x10 and __BOOT_DS at 0x18.
const (
	BootCSSelector = 0x10
	BootDSSelector = 0x18
	BootTRSelector = 0x20
)

// VirtioMMIOAddr returns the MMIO window base of virtio device i.
func VirtioMMIOAddr(i int) uint64 {
	return VirtioMMIOBase + uint64(i)*VirtioMMIOStride
}

// VirtioIRQ returns the GSI of virtio device i.
func VirtioIRQ(i int) uint32 {
	return VirtioFirstIRQ + uint32(i)
}

// Region is a range of guest-physical memory.
type Region struct{ GPA, Size uint64 }

// End returns the first address after the region.
func (r Region) End() uint64 { return r.GPA + r.Size }

// RAMRegions returns the guest RAM ranges for memSize bytes of RAM: low RAM
// from 0 up to memSize or MMIOGapStart, and the rest from 4 GiB up. These
// are the ranges to back with host memory and register as memory slots.
func RAMRegions(memSize uint64) []Region {
	if memSize == 0 {
		return nil
	}
	low := min(memSize, MMIOGapStart)
	r := []Region{{GPA: 0, Size: low}}
	if memSize > MMIOGapStart {
		r = append(r, Region{GPA: MMIOGapEnd, Size: memSize - MMIOGapStart})
	}
	return r
}

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one entry of the BIOS e820 memory map, as the zero page
// carries it.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// E820 returns the memory map reported to the guest for memSize bytes of
// RAM: usable RAM below EBDAStart, the reserved EBDA/VGA/BIOS area up to
// 1 MiB, usable RAM from 1 MiB to the end of low RAM, and usable RAM above
// 4 GiB when memory extends past MMIOGapStart.
func E820(memSize uint64) []E820Entry {
	var e []E820Entry
	low := min(memSize, MMIOGapStart)
	if low > 0 {
		e = append(e, E820Entry{Addr: 0, Size: min(low, EBDAStart), Type: E820RAM})
	}
	e = append(e, E820Entry{Addr: EBDAStart, Size: HighMemStart - EBDAStart, Type: E820Reserved})
	if low > HighMemStart {
		e = append(e, E820Entry{Addr: HighMemStart, Size: low - HighMemStart, Type: E820RAM})
	}
	if memSize > MMIOGapStart {
		e = append(e, E820Entry{Addr: MMIOGapEnd, Size: memSize - MMIOGapStart, Type: E820RAM})
	}
	return e
}

// span is a half-open range [start, end) used for placement checks.
type span struct {
	start, end uint64
	what       string
}

func (s span) overlaps(start, end uint64) bool {
	return start < s.end && s.start < end
}

// reservedLow lists the boot structures below 1 MiB a kernel segment must
// not overlap.
func reservedLow() []span {
	return []span{
		{0, BootStructEnd, "boot structures (GDT, TSS, stack, zero page, page tables)"},
		{CmdlineAddr, CmdlineAddr + CmdlineAreaSize, "command line"},
		{EBDAStart, HighMemStart, "EBDA, MP table and BIOS area"},
	}
}
