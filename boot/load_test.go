package boot

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// poison fills guest memory before Load so that tests see what Load wrote
// and what it was supposed to clear.
const poison = 0xEE

func newMem(size uint64) []byte {
	return bytes.Repeat([]byte{poison}, int(size))
}

func mustParse(t *testing.T, img []byte) *Kernel {
	t.Helper()
	k, err := ParseKernel(img)
	if err != nil {
		t.Fatalf("ParseKernel: %v", err)
	}
	return k
}

func TestLoadELF(t *testing.T) {
	mem := newMem(64 * mib)
	k := mustParse(t, tinyELF())
	initrd := pattern(0x3000, 0x77)
	cfg := Config{MemSize: 64 * mib, Cmdline: "console=ttyS0 panic=-1", Initrd: initrd, CPUs: 2}
	st, err := Load(mem, k, cfg)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	// The PT_LOAD segment is at p_paddr with its bss cleared.
	if !bytes.Equal(mem[0x100000:0x103000], pattern(0x3000, 0x5A)) {
		t.Error("segment bytes not at p_paddr")
	}
	if !allBytes(mem[0x103000:0x105000], 0) {
		t.Error("bss not zeroed")
	}
	if mem[0x105000] != poison {
		t.Error("Load wrote past the end of the segment")
	}

	want := EntryState{
		RIP: 0x100010, RSI: 0x7000, RSP: BootStackTop, RFLAGS: 0x2,
		CR0: 0x80050033, CR3: 0x9000, CR4: 0x20, EFER: 0x500,
		GDT: Table{Base: GDTAddr, Limit: GDTSize - 1}, IDT: Table{Base: IDTAddr},
	}
	got := *st
	got.CS, got.DS, got.TR = Segment{}, Segment{}, Segment{}
	if got != want {
		t.Errorf("entry state\n got %+v\nwant %+v", got, want)
	}
	if st.RSP <= 0x1000 || st.RSP > ZeroPageAddr || st.RSP%16 != 0 {
		t.Errorf("RSP %#x is not the top of a free low stack", st.RSP)
	}

	zp := zeroPage(mem)
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"boot_flag", uint64(le.Uint16(zp[zpBootFlag:])), 0xAA55},
		{"header", uint64(le.Uint32(zp[zpHeader:])), 0x53726448}, // "HdrS"
		{"version", uint64(le.Uint16(zp[zpVersion:])), 0x020C},
		{"type_of_loader", uint64(zp[zpTypeOfLoader]), 0xFF},
		{"loadflags", uint64(zp[zpLoadflags]), 0x01},
		{"cmd_line_ptr", uint64(le.Uint32(zp[zpCmdLinePtr:])), 0x20000},
		{"ext_cmd_line_ptr", uint64(le.Uint32(zp[zpExtCmdLinePtr:])), 0},
		{"ramdisk_size", uint64(le.Uint32(zp[zpRamdiskSize:])), 0x3000},
		{"ext_ramdisk_image", uint64(le.Uint32(zp[zpExtRamdiskImage:])), 0},
		{"ext_ramdisk_size", uint64(le.Uint32(zp[zpExtRamdiskSize:])), 0},
		{"initrd_addr_max", uint64(le.Uint32(zp[zpInitrdAddrMax:])), 0x7FFFFFFF},
		{"cmdline_size", uint64(le.Uint32(zp[zpCmdlineSize:])), 2047},
		{"ramdisk_image", uint64(le.Uint32(zp[zpRamdiskImage:])), 64*mib - 0x3000},
		{"sentinel", uint64(zp[0x1EF]), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("zero page %s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if got := cstring(mem[0x20000:]); got != cfg.Cmdline {
		t.Errorf("cmdline %q, want %q", got, cfg.Cmdline)
	}
	if !bytes.Equal(mem[64*mib-0x3000:], initrd) {
		t.Error("initrd bytes not at ramdisk_image")
	}
	if e := readE820(zp); fmt.Sprint(e) != fmt.Sprint(E820(64*mib)) || len(e) != 3 {
		t.Errorf("zero page e820 %v, want %v", e, E820(64*mib))
	}
	checkMPTable(t, mem, 2)
}

// TestLoadELFLowSegment: a segment below 1 MiB that avoids the boot
// structures is fine.
func TestLoadELFLowSegment(t *testing.T) {
	img := buildELF(elfSpec{entry: 0x40000, segs: []testSeg{
		{paddr: 0x40000, vaddr: 0x40000, data: pattern(0x800, 3), memsz: 0x1000},
		{paddr: 0x100000, vaddr: 0x100000, data: pattern(0x100, 4)},
	}})
	mem := newMem(4 * mib)
	st, err := Load(mem, mustParse(t, img), Config{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if st.RIP != 0x40000 || !bytes.Equal(mem[0x40000:0x40800], pattern(0x800, 3)) || !allBytes(mem[0x40800:0x41000], 0) {
		t.Errorf("low segment not loaded (RIP %#x)", st.RIP)
	}
	if !allBytes(mem[MPTableAddr:MPTableAddr+16], poison) {
		t.Error("CPUs 0 wrote an MP table")
	}
}

func TestLoadBzImage(t *testing.T) {
	tests := []struct {
		name     string
		mem      uint64
		spec     func(*bzSpec)
		wantLoad uint64
	}{
		{"relocatable at pref_address", 64 * mib, func(*bzSpec) {}, 16 * mib},
		{"relocatable, small memory: 2 MiB aligned above 1 MiB", 8 * mib, func(*bzSpec) {}, 2 * mib},
		{"relocatable, misaligned pref_address", 64 * mib, func(s *bzSpec) { s.pref = 0x1100000 }, 16 * mib},
		{"relocatable, pref_address 0", 64 * mib, func(s *bzSpec) { s.pref = 0 }, 16 * mib},
		{"relocatable, 4 MiB alignment, small memory", 12 * mib, func(s *bzSpec) { s.kernelAlign = 4 * mib }, 4 * mib},
		{"non-relocatable at pref_address", 64 * mib, func(s *bzSpec) { s.relocatable, s.pref = 0, 0x2000000 }, 32 * mib},
		{"non-relocatable, no pref_address", 8 * mib, func(s *bzSpec) { s.relocatable, s.pref = 0, 0 }, 1 * mib},
		{"init_size smaller than payload", 64 * mib, func(s *bzSpec) { s.initSize = 0x100 }, 16 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := defaultBz()
			tt.spec(&s)
			img := buildBz(s)
			k := mustParse(t, img)
			mem := newMem(tt.mem)
			initrd := pattern(0x1000, 0x33)
			st, err := Load(mem, k, Config{Cmdline: "root=/dev/vda", Initrd: initrd, CPUs: 1})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if st.RIP != tt.wantLoad+0x200 {
				t.Errorf("RIP %#x, want load address %#x + 0x200", st.RIP, tt.wantLoad)
			}
			if !bytes.Equal(mem[tt.wantLoad:tt.wantLoad+uint64(len(s.payload))], s.payload) {
				t.Error("protected-mode kernel not at the load address")
			}
			zp := zeroPage(mem)
			// The header is copied from 0x1f1 to 0x202+img[0x201]; the
			// loader's own fields are then overwritten.
			written := map[int]bool{}
			for _, r := range [][2]int{{0x210, 0x212}, {0x214, 0x220}, {0x228, 0x22C}} {
				for i := r[0]; i < r[1]; i++ {
					written[i] = true
				}
			}
			end := 0x202 + int(img[0x201])
			for i := 0x1F1; i < end; i++ {
				if !written[i] && zp[i] != img[i] {
					t.Fatalf("zero page byte %#x = %#x, want the image's %#x", i, zp[i], img[i])
				}
			}
			if !allBytes(zp[end:0x290], 0) || !allBytes(zp[0x1E9:0x1F1], 0) {
				t.Error("header copy ran past its length")
			}
			if zp[zpTypeOfLoader] != 0xFF {
				t.Errorf("type_of_loader %#x", zp[zpTypeOfLoader])
			}
			if zp[zpLoadflags] != 0x01 {
				t.Errorf("loadflags %#x, want LOADED_HIGH only (CAN_USE_HEAP cleared)", zp[zpLoadflags])
			}
			if got := uint64(le.Uint32(zp[zpCode32Start:])); got != tt.wantLoad {
				t.Errorf("code32_start %#x, want %#x", got, tt.wantLoad)
			}
			if got := le.Uint32(zp[zpCmdLinePtr:]); got != 0x20000 || cstring(mem[got:]) != "root=/dev/vda" {
				t.Errorf("cmd_line_ptr %#x -> %q", got, cstring(mem[got:]))
			}
			ri, rs := uint64(le.Uint32(zp[zpRamdiskImage:])), uint64(le.Uint32(zp[zpRamdiskSize:]))
			if rs != 0x1000 || !bytes.Equal(mem[ri:ri+rs], initrd) {
				t.Errorf("ramdisk %#x+%#x does not hold the initrd", ri, rs)
			}
			if ri < tt.wantLoad+max(uint64(s.initSize), uint64(len(s.payload))) || ri%4096 != 0 {
				t.Errorf("initrd at %#x overlaps the kernel or is unaligned", ri)
			}
			if fmt.Sprint(readE820(zp)) != fmt.Sprint(E820(tt.mem)) {
				t.Errorf("e820 %v", readE820(zp))
			}
			checkMPTable(t, mem, 1)
		})
	}
}

func TestLoadErrors(t *testing.T) {
	elfAt := func(paddr, size uint64) *Kernel {
		return mustParse(t, buildELF(elfSpec{entry: paddr, segs: []testSeg{{paddr: paddr, vaddr: paddr, data: pattern(16, 1), memsz: size}}}))
	}
	bz := func(f func(*bzSpec)) *Kernel {
		s := defaultBz()
		f(&s)
		return mustParse(t, buildBz(s))
	}
	tiny := mustParse(t, tinyELF())
	tests := []struct {
		name     string
		k        *Kernel
		memLen   uint64
		cfg      Config
		want     error
		contains []string
	}{
		{"ELF beyond memory", elfAt(0x3000000, 0x1000), 32 * mib, Config{}, ErrNoFit,
			[]string{"kernel needs 4096 bytes at 0x3000000 but guest memory is 33554432 bytes"}},
		{"ELF crossing the end of memory", elfAt(0x1FFF000, 0x2000), 32 * mib, Config{}, ErrNoFit, []string{"8192 bytes at 0x1fff000"}},
		{"ELF over the zero page", elfAt(0x7000, 0x100), 4 * mib, Config{}, ErrNoFit, []string{"zero page"}},
		{"ELF over the GDT", elfAt(0x0, 0x600), 4 * mib, Config{}, ErrNoFit, []string{"GDT"}},
		{"ELF over the cmdline", elfAt(0x1F000, 0x2000), 4 * mib, Config{}, ErrNoFit, []string{"command line"}},
		{"ELF over the EBDA", elfAt(0x9F000, 0x1000), 4 * mib, Config{}, ErrNoFit, []string{"MP table"}},
		{"bzImage pref beyond memory, non-relocatable", bz(func(s *bzSpec) { s.relocatable, s.pref = 0, 64*mib }), 32 * mib, Config{}, ErrNoFit,
			[]string{"kernel needs 262144 bytes at 0x4000000 but guest memory is 33554432 bytes"}},
		{"bzImage init_size larger than memory", bz(func(s *bzSpec) { s.initSize = 40 * mib }), 32 * mib, Config{}, ErrNoFit, []string{"kernel needs 41943040 bytes"}},
		{"bzImage 16 MiB alignment in 8 MiB", bz(func(s *bzSpec) { s.kernelAlign = 16 * mib }), 8 * mib, Config{}, ErrNoFit, nil},
		{"ELF cmdline too long", tiny, 4 * mib, Config{Cmdline: strings.Repeat("a", 2048)}, ErrCmdlineTooLong, []string{"2048", "2047"}},
		{"bzImage cmdline longer than cmdline_size", bz(func(s *bzSpec) { s.cmdlineSize = 16 }), 32 * mib,
			Config{Cmdline: strings.Repeat("b", 17)}, ErrCmdlineTooLong, []string{"17 bytes", "at most 16"}},
		{"cmdline with NUL", tiny, 4 * mib, Config{Cmdline: "a\x00b"}, nil, []string{"NUL"}},
		{"initrd too big", tiny, 4 * mib, Config{Initrd: make([]byte, 3*mib)}, ErrNoFit, []string{"initrd of 3145728 bytes"}},
		{"initrd bigger than memory", tiny, 4 * mib, Config{Initrd: make([]byte, 5*mib)}, ErrNoFit, nil},
		{"initrd above initrd_addr_max only", bz(func(s *bzSpec) { s.initrdMax = 0x17FFFF }), 32 * mib, Config{Initrd: make([]byte, 1*mib)}, ErrNoFit, nil},
		{"memory of 1 MiB", tiny, 1 * mib, Config{}, ErrNoFit, nil},
		{"MemSize beyond the mapping", tiny, 4 * mib, Config{MemSize: 8 * mib}, nil, []string{"mapping is 4194304 bytes"}},
		{"negative CPUs", tiny, 4 * mib, Config{CPUs: -1}, nil, []string{"CPUs"}},
		{"255 CPUs", tiny, 4 * mib, Config{CPUs: 255}, nil, []string{"CPUs"}},
		{"nil kernel", nil, 4 * mib, Config{}, nil, []string{"nil kernel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newMem(tt.memLen)
			st, err := Load(mem, tt.k, tt.cfg)
			if err == nil {
				t.Fatalf("Load = %+v, want error", st)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Load: %v, want %v", err, tt.want)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if !allBytes(mem, poison) {
				t.Error("failed Load modified guest memory")
			}
		})
	}
}

func TestLoadCmdlineLimits(t *testing.T) {
	s := defaultBz()
	s.cmdlineSize = 16
	bz := mustParse(t, buildBz(s))
	s.cmdlineSize = 1 << 20 // more than the command-line area holds
	bzHuge := mustParse(t, buildBz(s))
	tests := []struct {
		k   *Kernel
		len int
		ok  bool
	}{
		{mustParse(t, tinyELF()), 2047, true},
		{mustParse(t, tinyELF()), 2048, false},
		{bz, 16, true},
		{bz, 17, false},
		{bzHuge, CmdlineAreaSize - 1, true},
		{bzHuge, CmdlineAreaSize, false},
	}
	for _, tt := range tests {
		mem := newMem(32 * mib)
		cmd := strings.Repeat("x", tt.len)
		_, err := Load(mem, tt.k, Config{Cmdline: cmd})
		if (err == nil) != tt.ok {
			t.Errorf("%v cmdline of %d bytes: err %v, want ok=%v", tt.k.Kind, tt.len, err, tt.ok)
			continue
		}
		if tt.ok && (cstring(mem[CmdlineAddr:]) != cmd || mem[CmdlineAddr+tt.len] != 0) {
			t.Errorf("%d-byte cmdline not stored NUL-terminated", tt.len)
		}
	}
}

func TestInitrdPlacement(t *testing.T) {
	tinyK := mustParse(t, tinyELF())
	topSeg := mustParse(t, buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
		{paddr: 0x100000, vaddr: 0x100000, data: pattern(0x100, 1)},
		{paddr: 62 * mib, vaddr: 62 * mib, data: pattern(0x100, 2), memsz: 2 * mib},
	}}))
	bzK := func(f func(*bzSpec)) *Kernel {
		s := defaultBz()
		f(&s)
		return mustParse(t, buildBz(s))
	}
	tests := []struct {
		name string
		k    *Kernel
		mem  uint64
		size int
		want uint64
	}{
		{"ELF: top of memory, page aligned", tinyK, 64 * mib, 0x1800, 64*mib - 0x2000},
		{"ELF: below a segment at the top", topSeg, 64 * mib, 0x1000, 62*mib - 0x1000},
		{"bzImage: below initrd_addr_max", bzK(func(s *bzSpec) { s.initrdMax = 24*mib - 1 }), 64 * mib, 0x4000, 24*mib - 0x4000},
		{"bzImage: below the kernel when initrd_addr_max cuts into it",
			bzK(func(s *bzSpec) { s.initrdMax = 16*mib + 0x20000 }), 64 * mib, 2 * mib, 14 * mib},
		{"empty initrd", tinyK, 64 * mib, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newMem(tt.mem)
			initrd := pattern(tt.size, 0x44)
			if _, err := Load(mem, tt.k, Config{Initrd: initrd}); err != nil {
				t.Fatalf("Load: %v", err)
			}
			zp := zeroPage(mem)
			addr, size := uint64(le.Uint32(zp[zpRamdiskImage:])), uint64(le.Uint32(zp[zpRamdiskSize:]))
			if addr != tt.want || size != uint64(tt.size) {
				t.Fatalf("ramdisk at %#x size %#x, want %#x size %#x", addr, size, tt.want, tt.size)
			}
			if size > 0 && !bytes.Equal(mem[addr:addr+size], initrd) {
				t.Error("initrd bytes differ")
			}
		})
	}
}

// TestPlaceInitrd covers what needs more memory than a test can map:
// the cap at 2 GiB for ELF kernels and at the end of low RAM.
func TestPlaceInitrd(t *testing.T) {
	kernel := []span{{16 * mib, 20 * mib, "kernel"}}
	tests := []struct {
		name          string
		size, lowTop  uint64
		maxAddr, want uint64
		ok            bool
	}{
		{"ELF cap 0x7fffffff", 0x1000, 3 * gib, 0x7FFF_FFFF, 2*gib - 0x1000, true},
		{"low RAM ends at the gap", 0x1000, 3 * gib, 0xFFFF_FFFF, 3*gib - 0x1000, true},
		{"unaligned size rounds down", 0x1001, 64 * mib, 0xFFFF_FFFF, 64*mib - 0x2000, true},
		{"squeezed under the kernel", 14 * mib, 20 * mib, 0xFFFF_FFFF, 2 * mib, true},
		{"unaligned size moved under the kernel", 0x1001, 20 * mib, 16*mib + 0x800, 16*mib - 0x2000, true},
		{"does not fit under the kernel", 15*mib + 1, 20 * mib, 0xFFFF_FFFF, 0, false},
		{"max below 1 MiB", 0x1000, 64 * mib, 0x80000, 0, false},
	}
	for _, tt := range tests {
		got, err := placeInitrd(tt.size, tt.lowTop, tt.maxAddr, kernel)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("%s: placeInitrd = %#x, %v; want %#x ok=%v", tt.name, got, err, tt.want, tt.ok)
		}
		if err == nil && (got%4096 != 0 || got < HighMemStart || kernel[0].overlaps(got, got+tt.size) || got+tt.size > min(tt.lowTop, tt.maxAddr+1)) {
			t.Errorf("%s: placement %#x breaks an invariant", tt.name, got)
		}
	}
}

// TestLoadStaysInLowRAM: with a mapping larger than MemSize, nothing past
// MemSize is touched, and the e820 map follows MemSize.
func TestLoadStaysInLowRAM(t *testing.T) {
	mem := newMem(16 * mib)
	if _, err := Load(mem, mustParse(t, tinyELF()), Config{MemSize: 8 * mib, Initrd: pattern(0x5000, 1), CPUs: 4}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !allBytes(mem[8*mib:], poison) {
		t.Error("Load wrote above MemSize")
	}
	if e := readE820(zeroPage(mem)); e[len(e)-1].Addr+e[len(e)-1].Size != 8*mib {
		t.Errorf("e820 %v does not end at MemSize", e)
	}
}

func TestPageTables(t *testing.T) {
	mem := newMem(4 * mib)
	st, err := Load(mem, mustParse(t, tinyELF()), Config{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// Spot checks of raw entries: present|write|user, PS in the PDs.
	raw := []struct {
		addr uint64
		want uint64
	}{
		{PML4Addr, PDPTAddr | 7},
		{PML4Addr + 8, 0},
		{PDPTAddr, PDAddr | 7},
		{PDPTAddr + 3*8, (PDAddr + 3*0x1000) | 7},
		{PDPTAddr + 4*8, 0},
		{PDAddr, 0x87},
		{PDAddr + 8, 2*mib | 0x87},
		{PDAddr + 0x1000, 1*gib | 0x87},
		{PDAddr + 4*0x1000 - 8, (4*gib - 2*mib) | 0x87},
	}
	for _, r := range raw {
		if got := le.Uint64(mem[r.addr:]); got != r.want {
			t.Errorf("entry at %#x = %#x, want %#x", r.addr, got, r.want)
		}
	}
	// A page walk from CR3 maps every probe to itself.
	for _, va := range []uint64{0, 0x7000, 2*mib - 1, 2 * mib, 0x100010, 1*gib + 12345, 3 * gib, MMIOGapStart + 0x1000, LAPICAddr, 4*gib - 1} {
		pa, ok := walk(mem, st.CR3, va)
		if !ok || pa != va {
			t.Errorf("walk(%#x) = %#x, %v; want identity", va, pa, ok)
		}
	}
	if _, ok := walk(mem, st.CR3, 4*gib); ok {
		t.Error("4 GiB is mapped; only the first 4 GiB should be")
	}
}

// walk translates va through 4-level paging with 2 MiB leaves.
func walk(mem []byte, cr3, va uint64) (uint64, bool) {
	const addrMask = 0x000F_FFFF_FFFF_F000
	pml4e := le.Uint64(mem[cr3&addrMask+(va>>39&511)*8:])
	if pml4e&1 == 0 {
		return 0, false
	}
	pdpte := le.Uint64(mem[pml4e&addrMask+(va>>30&511)*8:])
	if pdpte&1 == 0 || pdpte&0x80 != 0 {
		return 0, false
	}
	pde := le.Uint64(mem[pdpte&addrMask+(va>>21&511)*8:])
	if pde&1 == 0 || pde&0x80 == 0 || pde&6 != 6 {
		return 0, false
	}
	return pde&^(2*mib-1)&addrMask | va&(2*mib-1), true
}

func TestGDT(t *testing.T) {
	mem := newMem(4 * mib)
	st, err := Load(mem, mustParse(t, tinyELF()), Config{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	gdt := mem[st.GDT.Base : st.GDT.Base+uint64(st.GDT.Limit)+1]
	// Well-known encodings of a flat 64-bit code and a flat data segment.
	if got := le.Uint64(gdt[0x10:]); got != 0x00AF9B000000FFFF {
		t.Errorf("code descriptor %#016x", got)
	}
	if got := le.Uint64(gdt[0x18:]); got != 0x00CF93000000FFFF {
		t.Errorf("data descriptor %#016x", got)
	}
	if le.Uint64(gdt[0:]) != 0 || le.Uint64(gdt[8:]) != 0 {
		t.Error("first two GDT slots are not null")
	}
	for _, seg := range []Segment{st.CS, st.DS, st.TR} {
		if int(seg.Selector)+8 > len(gdt) {
			t.Fatalf("selector %#x beyond the GDT limit", seg.Selector)
		}
		got := decodeDescriptor(gdt[seg.Selector:], seg.S == 0)
		got.Selector = seg.Selector
		if got != seg {
			t.Errorf("GDT[%#x] decodes to\n%+v\nentry state has\n%+v", seg.Selector, got, seg)
		}
	}
	if st.CS.Selector != 0x10 || st.DS.Selector != 0x18 || st.CS.L != 1 || st.CS.Type&0xA != 0xA || st.DS.Type&0x2 == 0 {
		t.Errorf("CS/DS do not follow the boot protocol: %+v %+v", st.CS, st.DS)
	}
	if st.TR.Type != 11 || st.TR.S != 0 || st.TR.Limit < 0x67 || !allBytes(mem[st.TR.Base:st.TR.Base+0x68], 0) {
		t.Errorf("TR is not a clean busy 64-bit TSS: %+v", st.TR)
	}
}

// decodeDescriptor decodes a GDT entry; system descriptors take 16 bytes.
func decodeDescriptor(b []byte, system bool) Segment {
	d := le.Uint64(b)
	s := Segment{
		Base:    d>>16&0xFFFFFF | (d>>56&0xFF)<<24,
		Limit:   uint32(d&0xFFFF | (d>>48&0xF)<<16),
		Type:    uint8(d >> 40 & 0xF),
		S:       uint8(d >> 44 & 1),
		DPL:     uint8(d >> 45 & 3),
		Present: uint8(d >> 47 & 1),
		AVL:     uint8(d >> 52 & 1),
		L:       uint8(d >> 53 & 1),
		DB:      uint8(d >> 54 & 1),
		G:       uint8(d >> 55 & 1),
	}
	if s.G == 1 {
		s.Limit = s.Limit<<12 | 0xFFF
	}
	if system {
		s.Base |= le.Uint64(b[8:]) << 32
	}
	return s
}

func allBytes(b []byte, v byte) bool {
	return bytes.Count(b, []byte{v}) == len(b)
}
