package boot

// Control-register and EFER bits of the 64-bit entry state.
const (
	cr0PE = 1 << 0  // protection enable
	cr0MP = 1 << 1  // monitor coprocessor
	cr0ET = 1 << 4  // extension type
	cr0NE = 1 << 5  // numeric error
	cr0WP = 1 << 16 // write protect
	cr0AM = 1 << 18 // alignment mask
	cr0PG = 1 << 31 // paging

	cr4PAE = 1 << 5

	eferLME = 1 << 8  // long mode enable
	eferLMA = 1 << 10 // long mode active

	rflagsReserved = 1 << 1 // bit 1 always reads as 1; IF stays clear
)

// Page-table entry bits.
const (
	ptePresent = 1 << 0
	pteWrite   = 1 << 1
	pteUser    = 1 << 2
	ptePS      = 1 << 7 // 2 MiB page in a page directory
	pageSize   = 0x1000
	hugePage   = 2 << 20
)

// Segment is a segment register as KVM's struct kvm_segment describes it.
// Limit is in bytes, already scaled by the granularity bit (0xffffffff for
// a 4 GiB flat segment with G=1). Flag fields are 0 or 1; DPL is 0-3.
type Segment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Type                           uint8
	Present, DPL, DB, S, L, G, AVL uint8
}

// Table is a descriptor-table register (GDTR, IDTR).
type Table struct {
	Base  uint64
	Limit uint16
}

// EntryState is the vCPU state for the 64-bit entry: long mode, paging on
// with the identity map at PML4Addr, flat segments from the boot GDT,
// interrupts off, RSI pointing at the zero page. DS is the data segment to
// load into DS, ES, FS, GS and SS. LDT is not used (mark it unusable).
type EntryState struct {
	RIP, RSI, RSP, RFLAGS uint64
	CR0, CR3, CR4, EFER   uint64
	GDT, IDT              Table
	CS, DS                Segment
	TR                    Segment
}

// bootCS is the 64-bit code segment at __BOOT_CS: flat, execute/read.
func bootCS() Segment {
	return Segment{Limit: 0xFFFF_FFFF, Selector: BootCSSelector, Type: 0xB,
		Present: 1, S: 1, L: 1, G: 1}
}

// bootDS is the flat read/write data segment at __BOOT_DS.
func bootDS() Segment {
	return Segment{Limit: 0xFFFF_FFFF, Selector: BootDSSelector, Type: 0x3,
		Present: 1, DB: 1, S: 1, G: 1}
}

// bootTR is the busy 64-bit TSS (type 11) at BootTSSAddr.
func bootTR() Segment {
	return Segment{Base: BootTSSAddr, Limit: BootTSSSize - 1, Selector: BootTRSelector, Type: 0xB,
		Present: 1}
}

// descriptor encodes s as the low 8 bytes of a GDT descriptor. For a system
// segment (S=0) in long mode the high 8 bytes hold Base >> 32.
func (s Segment) descriptor() uint64 {
	limit := uint64(s.Limit)
	if s.G != 0 {
		limit >>= 12
	}
	d := limit & 0xFFFF
	d |= (s.Base & 0xFF_FFFF) << 16
	d |= uint64(s.Type&0xF) << 40
	d |= uint64(s.S&1) << 44
	d |= uint64(s.DPL&3) << 45
	d |= uint64(s.Present&1) << 47
	d |= (limit >> 16 & 0xF) << 48
	d |= uint64(s.AVL&1) << 52
	d |= uint64(s.L&1) << 53
	d |= uint64(s.DB&1) << 54
	d |= uint64(s.G&1) << 55
	d |= (s.Base >> 24 & 0xFF) << 56
	return d
}

// writeGDT writes the boot GDT (null, null, code, data, TSS) and zeroes the
// TSS. mem starts at guest-physical 0.
func writeGDT(mem []byte) {
	gdt := mem[GDTAddr : GDTAddr+GDTSize]
	clear(gdt)
	put64(gdt, BootCSSelector, bootCS().descriptor())
	put64(gdt, BootDSSelector, bootDS().descriptor())
	tr := bootTR()
	put64(gdt, BootTRSelector, tr.descriptor())
	put64(gdt, BootTRSelector+8, tr.Base>>32)
	clear(mem[BootTSSAddr : BootTSSAddr+BootTSSSize])
	clear(mem[IDTAddr:BootTSSAddr])
}

// writePageTables identity-maps 0..4 GiB with 2 MiB pages: one PML4 entry,
// four PDPT entries, 4 x 512 page-directory entries. All are present,
// writable and user-accessible.
func writePageTables(mem []byte) {
	const flags = ptePresent | pteWrite | pteUser
	pml4 := mem[PML4Addr : PML4Addr+pageSize]
	clear(pml4)
	put64(pml4, 0, PDPTAddr|flags)
	pdpt := mem[PDPTAddr : PDPTAddr+pageSize]
	clear(pdpt)
	for i := range PDCount {
		put64(pdpt, i*8, uint64(PDAddr+i*pageSize)|flags)
	}
	pd := mem[PDAddr : PDAddr+PDCount*pageSize]
	for i := range PDCount * 512 {
		put64(pd, i*8, uint64(i)*hugePage|flags|ptePS)
	}
}

// entryState returns the register state for the 64-bit entry at rip.
func entryState(rip uint64) *EntryState {
	return &EntryState{
		RIP:    rip,
		RSI:    ZeroPageAddr,
		RSP:    BootStackTop,
		RFLAGS: rflagsReserved,
		CR0:    cr0PE | cr0MP | cr0ET | cr0NE | cr0WP | cr0AM | cr0PG,
		CR3:    PML4Addr,
		CR4:    cr4PAE,
		EFER:   eferLME | eferLMA,
		GDT:    Table{Base: GDTAddr, Limit: GDTSize - 1},
		IDT:    Table{Base: IDTAddr, Limit: 0},
		CS:     bootCS(),
		DS:     bootDS(),
		TR:     bootTR(),
	}
}
