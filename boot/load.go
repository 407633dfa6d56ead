package boot

import (
	"errors"
	"fmt"
	"strings"
)

// Config says what to load besides the kernel.
type Config struct {
	// MemSize is the guest's total RAM in bytes, as RAMRegions lays it
	// out; 0 means len(lowMem).
	MemSize uint64
	// Cmdline is the kernel command line, without a NUL.
	Cmdline string
	// Initrd is the initial ramdisk image; nil or empty for none.
	Initrd []byte
	// CPUs is the number of vCPUs the MP table announces. 0 writes no MP
	// table (the kernel then sees one CPU and no IOAPIC).
	CPUs int
}

// elfInitrdAddrMax is the highest initrd byte for ELF kernels, which have
// no setup header to say so.
const elfInitrdAddrMax = 0x7FFF_FFFF

// bootProtocolELF is the boot protocol version written into the zero page
// for ELF kernels: 2.12, whose fields (ext_* high halves, xloadflags) this
// loader fills in.
const bootProtocolELF = 0x020C

// Zero-page fields outside the setup header (struct boot_params).
const (
	bpExtRamdiskImage = 0x0C0
	bpExtRamdiskSize  = 0x0C4
	bpExtCmdLinePtr   = 0x0C8
	bpE820Entries     = 0x1E8
	bpE820Table       = 0x2D0
	bpE820EntrySize   = 20
	bpE820Max         = 128
)

// typeOfLoaderUndefined is type_of_loader 0xFF: a loader without an
// assigned ID.
const typeOfLoaderUndefined = 0xFF

// Load writes the kernel, command line, initrd and boot structures into
// lowMem, the host mapping of guest-physical addresses 0..len(lowMem), and
// returns the vCPU state for the 64-bit entry. lowMem must cover all of low
// RAM, min(cfg.MemSize, MMIOGapStart) bytes.
//
// Everything is checked before anything is written: on error lowMem is
// unchanged.
func Load(lowMem []byte, k *Kernel, cfg Config) (*EntryState, error) {
	if k == nil {
		return nil, errors.New("load kernel: nil kernel")
	}
	memSize := cfg.MemSize
	if memSize == 0 {
		memSize = uint64(len(lowMem))
	}
	lowTop := min(memSize, MMIOGapStart)
	if uint64(len(lowMem)) < lowTop {
		return nil, fmt.Errorf("load kernel: guest memory mapping is %d bytes but low RAM is %d bytes", len(lowMem), lowTop)
	}
	if lowTop <= HighMemStart {
		return nil, fmt.Errorf("load kernel: guest memory is %d bytes, need more than 1 MiB: %w", lowTop, ErrNoFit)
	}
	if cfg.CPUs < 0 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("load kernel: %d CPUs, want 0 to %d", cfg.CPUs, MaxCPUs)
	}
	mem := lowMem[:lowTop]

	if strings.IndexByte(cfg.Cmdline, 0) >= 0 {
		return nil, errors.New("load kernel: command line contains a NUL byte")
	}
	if limit := k.cmdlineLimit(); len(cfg.Cmdline) > limit {
		return nil, fmt.Errorf("load kernel: command line is %d bytes but the kernel accepts at most %d: %w",
			len(cfg.Cmdline), limit, ErrCmdlineTooLong)
	}

	// Plan: where the kernel goes and what the initrd must avoid.
	var (
		entry, code32 uint64
		kernelSpans   []span
		initrdMax     uint64
	)
	switch k.Kind {
	case KindELF:
		for i, l := range k.loads {
			if err := checkELFLoad(l, lowTop); err != nil {
				return nil, fmt.Errorf("load kernel: ELF segment %d: %w", i, err)
			}
			kernelSpans = append(kernelSpans, span{l.paddr, l.paddr + l.memsz, "kernel"})
		}
		entry = k.Entry64
		initrdMax = elfInitrdAddrMax
	case KindBzImage:
		addr, err := placeBzImage(&k.bz, lowTop)
		if err != nil {
			return nil, fmt.Errorf("load kernel: %w", err)
		}
		kernelSpans = append(kernelSpans, span{addr, addr + k.bz.runSize(), "kernel"})
		entry, code32 = addr+entry64Offset, addr
		initrdMax = uint64(k.bz.initrdAddrMax)
	default:
		return nil, fmt.Errorf("load kernel: unknown kernel kind %v", k.Kind)
	}
	initrdAddr, err := placeInitrd(uint64(len(cfg.Initrd)), lowTop, initrdMax, kernelSpans)
	if err != nil {
		return nil, fmt.Errorf("load kernel: %w", err)
	}

	// Write.
	clear(mem[:BootStructEnd])
	writeGDT(mem)
	writePageTables(mem)
	cmd := mem[CmdlineAddr : CmdlineAddr+CmdlineAreaSize]
	clear(cmd)
	copy(cmd, cfg.Cmdline)

	switch k.Kind {
	case KindELF:
		for _, l := range k.loads {
			dst := mem[l.paddr : l.paddr+l.memsz]
			n := copy(dst, k.image[l.off:l.off+l.filesz])
			clear(dst[n:])
		}
	case KindBzImage:
		copy(mem[code32:], k.bz.payload)
	}
	copy(mem[initrdAddr:], cfg.Initrd)

	writeZeroPage(mem[ZeroPageAddr:ZeroPageAddr+ZeroPageSize], k, zeroPageInfo{
		code32:     code32,
		initrdAddr: initrdAddr,
		initrdSize: uint64(len(cfg.Initrd)),
		memSize:    memSize,
	})
	if cfg.CPUs > 0 {
		if err := WriteMPTable(mem, cfg.CPUs); err != nil {
			// Unreachable: lowTop > 1 MiB and CPUs <= MaxCPUs were checked.
			return nil, fmt.Errorf("load kernel: %w", err)
		}
	}
	return entryState(entry), nil
}

// cmdlineLimit is the longest command line, without its NUL, the kernel
// accepts and the command-line area holds.
func (k *Kernel) cmdlineLimit() int {
	limit := uint64(MaxCmdline - 1)
	if k.Kind == KindBzImage {
		limit = uint64(k.bz.cmdlineSize)
	}
	return int(min(limit, CmdlineAreaSize-1))
}

// checkELFLoad checks that a segment lies in low RAM and clear of the boot
// structures below 1 MiB.
func checkELFLoad(l elfLoad, lowTop uint64) error {
	if !fits(l.paddr, l.memsz, lowTop) {
		return fmt.Errorf("kernel needs %d bytes at %#x but guest memory is %d bytes%s: %w",
			l.memsz, l.paddr, lowTop, gapNote(lowTop), ErrNoFit)
	}
	for _, r := range reservedLow() {
		if r.overlaps(l.paddr, l.paddr+l.memsz) {
			return fmt.Errorf("kernel at [%#x, %#x) overlaps the %s at [%#x, %#x): %w",
				l.paddr, l.paddr+l.memsz, r.what, r.start, r.end, ErrNoFit)
		}
	}
	return nil
}

// placeInitrd returns the highest page-aligned address at or above 1 MiB
// where size bytes fit below both lowTop and maxAddr (the highest byte the
// kernel allows) without overlapping avoid. Size 0 needs no room.
func placeInitrd(size, lowTop, maxAddr uint64, avoid []span) (uint64, error) {
	if size == 0 {
		return 0, nil
	}
	const page = 0x1000
	top := min(lowTop, maxAddr+1)
	fail := func() error {
		return fmt.Errorf("initrd of %d bytes does not fit between %#x and %#x clear of the kernel: %w",
			size, HighMemStart, top, ErrNoFit)
	}
	if top < HighMemStart || size > top-HighMemStart {
		return 0, fail()
	}
	addr := alignDown(top-size, page)
	for moved := true; moved; {
		moved = false
		for _, s := range avoid {
			if !s.overlaps(addr, addr+size) {
				continue
			}
			if s.start < HighMemStart+size {
				return 0, fail()
			}
			addr, moved = alignDown(s.start-size, page), true
		}
	}
	if addr < HighMemStart {
		return 0, fail()
	}
	return addr, nil
}

// zeroPageInfo is what the zero page says besides the setup header.
type zeroPageInfo struct {
	code32                 uint64 // bzImage load address, 0 for ELF
	initrdAddr, initrdSize uint64
	memSize                uint64
}

// writeZeroPage fills struct boot_params: the kernel's setup header (for a
// bzImage) or a synthesized one (for ELF), then the loader's fields.
func writeZeroPage(zp []byte, k *Kernel, in zeroPageInfo) {
	clear(zp)
	if k.Kind == KindBzImage {
		copy(zp[hdrStart:k.bz.hdrEnd], k.image[hdrStart:k.bz.hdrEnd])
		put32(zp, hdrCode32Start, uint32(in.code32))
	} else {
		put16(zp, hdrBootFlag, bootFlagMagic)
		copy(zp[hdrMagic:], headerMagic)
		put16(zp, hdrVersion, bootProtocolELF)
		put32(zp, hdrInitrdAddrMax, elfInitrdAddrMax)
		put32(zp, hdrCmdlineSize, MaxCmdline-1)
		put16(zp, hdrXloadflags, xlfKernel64)
	}
	zp[hdrTypeOfLoader] = typeOfLoaderUndefined
	// The kernel is loaded high; there is no real-mode setup code running,
	// so no heap for it either.
	zp[hdrLoadflags] = (zp[hdrLoadflags] | loadedHigh) &^ canUseHeap

	put32(zp, hdrCmdLinePtr, uint32(CmdlineAddr))
	put32(zp, bpExtCmdLinePtr, uint32(uint64(CmdlineAddr)>>32))
	put32(zp, hdrRamdiskImage, uint32(in.initrdAddr))
	put32(zp, hdrRamdiskSize, uint32(in.initrdSize))
	put32(zp, bpExtRamdiskImage, uint32(in.initrdAddr>>32))
	put32(zp, bpExtRamdiskSize, uint32(in.initrdSize>>32))

	e := E820(in.memSize)
	e = e[:min(len(e), bpE820Max)]
	zp[bpE820Entries] = uint8(len(e))
	for i, ent := range e {
		off := bpE820Table + i*bpE820EntrySize
		put64(zp, off, ent.Addr)
		put64(zp, off+8, ent.Size)
		put32(zp, off+16, ent.Type)
	}
}
