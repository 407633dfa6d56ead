package boot

import "fmt"

// Offsets of the setup header fields, both in a bzImage file and in the
// zero page (struct boot_params), which embeds the header at 0x1f1. From
// the Linux x86 boot protocol document.
const (
	hdrStart           = 0x1F1 // setup_sects, first header byte
	hdrSetupSects      = 0x1F1
	hdrSyssize         = 0x1F4
	hdrBootFlag        = 0x1FE
	hdrJump            = 0x200 // 2-byte short jump; its offset byte gives the header length
	hdrMagic           = 0x202
	hdrVersion         = 0x206
	hdrTypeOfLoader    = 0x210
	hdrLoadflags       = 0x211
	hdrCode32Start     = 0x214
	hdrRamdiskImage    = 0x218
	hdrRamdiskSize     = 0x21C
	hdrCmdLinePtr      = 0x228
	hdrInitrdAddrMax   = 0x22C
	hdrKernelAlignment = 0x230
	hdrRelocatable     = 0x234
	hdrXloadflags      = 0x236
	hdrCmdlineSize     = 0x238
	hdrPrefAddress     = 0x258
	hdrInitSize        = 0x260
	// hdrMinEnd is the end of init_size, the last field this loader reads.
	hdrMinEnd = 0x264
	// hdrMaxEnd is where struct boot_params' next field begins
	// (edd_mbr_sig_buffer): the header cannot extend past it.
	hdrMaxEnd = 0x290

	bootFlagMagic = 0xAA55
	headerMagic   = "HdrS"

	// minProtocol is 2.12, the first version with xloadflags and thus a
	// declared 64-bit entry point.
	minProtocol = 0x020C

	loadedHigh  = 1 << 0 // loadflags: protected-mode code at 0x100000
	canUseHeap  = 1 << 7 // loadflags: heap_end_ptr is valid
	xlfKernel64 = 1 << 0 // xloadflags: 64-bit entry at load address + 0x200

	// entry64Offset is the offset of the 64-bit entry from the load address.
	entry64Offset = 0x200
	// defaultInitrdAddrMax applies when initrd_addr_max is zero.
	defaultInitrdAddrMax = 0x37FF_FFFF
	// legacyLoadAddr is where a non-relocatable kernel without a preferred
	// address is loaded.
	legacyLoadAddr = HighMemStart
	// preferredMinLoad is where a relocatable kernel is tried when its
	// pref_address is unusable: Linux's default LOAD_PHYSICAL_ADDR.
	preferredMinLoad = 16 << 20
)

// bzHeader holds the setup header fields the loader uses.
type bzHeader struct {
	hdrEnd        int    // 0x202 + byte at 0x201: end of the header to copy
	payload       []byte // the protected-mode kernel
	initrdAddrMax uint32
	kernelAlign   uint32
	relocatable   bool
	cmdlineSize   uint32
	prefAddress   uint64
	initSize      uint32
}

func parseBzImage(img []byte) (*Kernel, error) {
	if len(img) < hdrVersion+2 {
		return nil, fmt.Errorf("bzImage setup header needs %d bytes, file has %d: %w", hdrVersion+2, len(img), ErrTruncated)
	}
	if f := le16(img, hdrBootFlag); f != bootFlagMagic {
		return nil, fmt.Errorf("bzImage boot_flag is %#04x, want %#04x: %w", f, bootFlagMagic, ErrMalformed)
	}
	if m := img[hdrMagic : hdrMagic+4]; string(m) != headerMagic {
		return nil, fmt.Errorf("bzImage header magic is %q, want %q: %w", m, headerMagic, ErrMalformed)
	}
	v := le16(img, hdrVersion)
	if v < minProtocol {
		return nil, fmt.Errorf("bzImage boot protocol %d.%02d, want 2.12 or later for the 64-bit entry: %w",
			v>>8, v&0xFF, ErrUnsupported)
	}
	end := hdrMagic + int(img[hdrJump+1])
	if end < hdrMinEnd || end > hdrMaxEnd {
		return nil, fmt.Errorf("bzImage setup header ends at %#x, want %#x to %#x: %w", end, hdrMinEnd, hdrMaxEnd, ErrMalformed)
	}
	if len(img) < end {
		return nil, fmt.Errorf("bzImage setup header ends at %#x, file has %d bytes: %w", end, len(img), ErrTruncated)
	}
	if img[hdrLoadflags]&loadedHigh == 0 {
		return nil, fmt.Errorf("bzImage loadflags %#02x lack LOADED_HIGH: %w", img[hdrLoadflags], ErrUnsupported)
	}
	if x := le16(img, hdrXloadflags); x&xlfKernel64 == 0 {
		return nil, fmt.Errorf("bzImage xloadflags %#04x lack XLF_KERNEL_64 (no 64-bit entry): %w", x, ErrUnsupported)
	}

	setupSects := int(img[hdrSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	setupSize := (setupSects + 1) * 512
	if len(img) <= setupSize {
		return nil, fmt.Errorf("bzImage setup is %d bytes, file has %d: %w", setupSize, len(img), ErrTruncated)
	}
	// syssize (in 16-byte units) only detects truncation: depending on the
	// kernel version it is rounded up (the file is padded to match) or down
	// (the file carries a few more bytes, the CRC last), so the whole rest
	// of the file is loaded.
	syssize := uint64(le32(img, hdrSyssize)) * 16
	if syssize == 0 {
		return nil, fmt.Errorf("bzImage syssize is 0: %w", ErrMalformed)
	}
	if rest := uint64(len(img) - setupSize); syssize > rest {
		return nil, fmt.Errorf("bzImage protected-mode kernel is %d bytes, file has %d after the setup: %w", syssize, rest, ErrTruncated)
	}

	h := bzHeader{
		hdrEnd:        end,
		payload:       img[setupSize:],
		initrdAddrMax: le32(img, hdrInitrdAddrMax),
		kernelAlign:   le32(img, hdrKernelAlignment),
		relocatable:   img[hdrRelocatable] != 0,
		cmdlineSize:   le32(img, hdrCmdlineSize),
		prefAddress:   le64(img, hdrPrefAddress),
		initSize:      le32(img, hdrInitSize),
	}
	if h.initrdAddrMax == 0 {
		h.initrdAddrMax = defaultInitrdAddrMax
	}
	if h.relocatable && (h.kernelAlign == 0 || h.kernelAlign&(h.kernelAlign-1) != 0) {
		return nil, fmt.Errorf("bzImage kernel_alignment %#x is not a power of two: %w", h.kernelAlign, ErrMalformed)
	}
	if !h.relocatable && h.prefAddress != 0 && h.prefAddress < HighMemStart {
		return nil, fmt.Errorf("non-relocatable bzImage wants to run at %#x, below 1 MiB: %w", h.prefAddress, ErrUnsupported)
	}

	base := h.prefAddress
	if base == 0 {
		base = legacyLoadAddr
	}
	return &Kernel{
		Kind:     KindBzImage,
		Entry64:  base + entry64Offset,
		Protocol: v,
		image:    img,
		bz:       h,
	}, nil
}

// runSize is the contiguous memory the kernel needs from its load
// address: init_size, or the image itself if that is larger.
func (h *bzHeader) runSize() uint64 {
	return max(uint64(h.initSize), uint64(len(h.payload)))
}

// placeBzImage picks the load address of the protected-mode kernel in low
// RAM [0, lowTop). A relocatable kernel goes at pref_address if that is
// aligned and fits, else at the first kernel_alignment-aligned address at
// or above 16 MiB, then 1 MiB, that fits. A non-relocatable kernel runs at
// pref_address whatever happens, so it is loaded there.
func placeBzImage(h *bzHeader, lowTop uint64) (uint64, error) {
	need := h.runSize()
	var cands []uint64
	if h.relocatable {
		a := uint64(h.kernelAlign)
		if p := h.prefAddress; p >= HighMemStart && p%a == 0 {
			cands = append(cands, p)
		}
		cands = append(cands, alignUp(preferredMinLoad, a), alignUp(HighMemStart, a))
	} else {
		p := h.prefAddress
		if p == 0 {
			p = legacyLoadAddr
		}
		cands = append(cands, p)
	}
	for _, c := range cands {
		if fits(c, need, lowTop) {
			return c, nil
		}
	}
	last := cands[len(cands)-1]
	return 0, fmt.Errorf("kernel needs %d bytes at %#x but guest memory is %d bytes%s: %w",
		need, last, lowTop, gapNote(lowTop), ErrNoFit)
}

// fits reports whether [addr, addr+size) lies within [0, top).
func fits(addr, size, top uint64) bool {
	return addr <= top && size <= top-addr
}

// gapNote qualifies a memory size that was cut at the MMIO gap.
func gapNote(lowTop uint64) string {
	if lowTop == MMIOGapStart {
		return " below the MMIO gap"
	}
	return ""
}
