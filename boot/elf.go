package boot

import (
	"fmt"
	"slices"
)

// ELF64 constants (System V gABI, x86-64 psABI).
const (
	elfMagic       = "\x7fELF"
	elfHeaderSize  = 64
	elfPhdrSize    = 56
	elfClass64     = 2
	elfData2LSB    = 1
	elfVersion     = 1
	elfTypeExec    = 2
	elfMachineX64  = 62
	ptLoad         = 1
	ptNote         = 4
	maxProgHeaders = 128 // Linux's vmlinux has about 5

	// The Xen PVH entry note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY,
	// descriptor the 32-bit physical entry address (4 or 8 bytes).
	xenNoteName      = "Xen\x00"
	xenPhys32EntryNT = 18
)

// elfLoad is one PT_LOAD segment.
type elfLoad struct {
	off, filesz, memsz uint64
	paddr, vaddr       uint64
}

func parseELF(img []byte) (*Kernel, error) {
	if len(img) < elfHeaderSize {
		return nil, fmt.Errorf("ELF header needs %d bytes, file has %d: %w", elfHeaderSize, len(img), ErrTruncated)
	}
	if c := img[4]; c != elfClass64 {
		return nil, fmt.Errorf("ELF class %d, not 64-bit: %w", c, ErrUnknownFormat)
	}
	if d := img[5]; d != elfData2LSB {
		return nil, fmt.Errorf("ELF data encoding %d, not little-endian: %w", d, ErrUnsupported)
	}
	if v := img[6]; v != elfVersion {
		return nil, fmt.Errorf("ELF ident version %d: %w", v, ErrMalformed)
	}
	if t := le16(img, 16); t != elfTypeExec {
		return nil, fmt.Errorf("ELF type %d, want ET_EXEC (2): %w", t, ErrUnsupported)
	}
	if m := le16(img, 18); m != elfMachineX64 {
		return nil, fmt.Errorf("ELF machine %d, want x86-64 (62): %w", m, ErrUnsupported)
	}
	entry := le64(img, 24)
	phoff := le64(img, 32)
	phentsize := le16(img, 54)
	phnum := le16(img, 56)
	if phentsize != elfPhdrSize {
		return nil, fmt.Errorf("ELF program header size %d, want %d: %w", phentsize, elfPhdrSize, ErrMalformed)
	}
	if phnum == 0 || phnum > maxProgHeaders {
		return nil, fmt.Errorf("ELF has %d program headers, want 1 to %d: %w", phnum, maxProgHeaders, ErrMalformed)
	}
	if !inFile(phoff, uint64(phnum)*elfPhdrSize, len(img)) {
		return nil, fmt.Errorf("ELF program headers at %#x (%d of them) end past the file (%d bytes): %w",
			phoff, phnum, len(img), ErrTruncated)
	}

	k := &Kernel{Kind: KindELF, image: img}
	pvhFound := false
	for i := range int(phnum) {
		ph := img[int(phoff)+i*elfPhdrSize:][:elfPhdrSize]
		typ := le32(ph, 0)
		off, vaddr, paddr := le64(ph, 8), le64(ph, 16), le64(ph, 24)
		filesz, memsz, align := le64(ph, 32), le64(ph, 40), le64(ph, 48)
		switch typ {
		case ptLoad:
			if !inFile(off, filesz, len(img)) {
				return nil, fmt.Errorf("ELF segment %d: file range [%#x, +%#x) ends past the file (%d bytes): %w",
					i, off, filesz, len(img), ErrTruncated)
			}
			if filesz > memsz {
				return nil, fmt.Errorf("ELF segment %d: file size %#x exceeds memory size %#x: %w", i, filesz, memsz, ErrMalformed)
			}
			if paddr+memsz < paddr || vaddr+memsz < vaddr {
				return nil, fmt.Errorf("ELF segment %d: address %#x + size %#x wraps around: %w", i, paddr, memsz, ErrMalformed)
			}
			if memsz == 0 {
				continue
			}
			k.loads = append(k.loads, elfLoad{off: off, filesz: filesz, memsz: memsz, paddr: paddr, vaddr: vaddr})
		case ptNote:
			if !inFile(off, filesz, len(img)) {
				return nil, fmt.Errorf("ELF note segment %d: [%#x, +%#x) ends past the file (%d bytes): %w",
					i, off, filesz, len(img), ErrTruncated)
			}
			pvh, ok, err := findPVHNote(img[off:][:filesz], align)
			if err != nil {
				return nil, fmt.Errorf("ELF note segment %d: %w", i, err)
			}
			if ok && !pvhFound {
				k.PVHEntry, pvhFound = pvh, true
			}
		}
	}
	if len(k.loads) == 0 {
		return nil, fmt.Errorf("ELF has no non-empty PT_LOAD segment: %w", ErrMalformed)
	}

	sorted := slices.Clone(k.loads)
	slices.SortFunc(sorted, func(a, b elfLoad) int {
		switch {
		case a.paddr < b.paddr:
			return -1
		case a.paddr > b.paddr:
			return 1
		}
		return 0
	})
	for i := 1; i < len(sorted); i++ {
		if p, c := sorted[i-1], sorted[i]; c.paddr < p.paddr+p.memsz {
			return nil, fmt.Errorf("ELF segments at physical [%#x, %#x) and [%#x, %#x) overlap: %w",
				p.paddr, p.paddr+p.memsz, c.paddr, c.paddr+c.memsz, ErrMalformed)
		}
	}

	phys, ok := elfEntryPhys(k.loads, entry)
	if !ok {
		return nil, fmt.Errorf("ELF entry point %#x is outside every PT_LOAD segment: %w", entry, ErrMalformed)
	}
	k.Entry64 = phys
	return k, nil
}

// elfEntryPhys translates e_entry to a physical address: through the
// segment whose virtual range holds it (e_entry - p_vaddr + p_paddr), or,
// for kernels such as Linux's vmlinux whose e_entry is already physical,
// through the segment whose physical range holds it.
func elfEntryPhys(loads []elfLoad, entry uint64) (uint64, bool) {
	for _, l := range loads {
		if entry >= l.vaddr && entry-l.vaddr < l.memsz {
			return entry - l.vaddr + l.paddr, true
		}
	}
	for _, l := range loads {
		if entry >= l.paddr && entry-l.paddr < l.memsz {
			return entry, true
		}
	}
	return 0, false
}

// findPVHNote walks the notes of one PT_NOTE segment and returns the Xen
// PHYS32_ENTRY address, if present. The descriptor and the next note start
// at 4-byte boundaries, or 8-byte ones when the segment is 8-byte aligned
// (as for GNU property notes), counted from the note's start.
func findPVHNote(b []byte, segAlign uint64) (uint64, bool, error) {
	pad := uint64(4)
	if segAlign == 8 {
		pad = 8
	}
	var (
		entry uint64
		found bool
	)
	for off := uint64(0); off < uint64(len(b)); {
		if uint64(len(b))-off < 12 {
			return 0, false, fmt.Errorf("note at %#x: header needs 12 bytes, %d left: %w", off, uint64(len(b))-off, ErrMalformed)
		}
		namesz, descsz, typ := uint64(le32(b, int(off))), uint64(le32(b, int(off)+4)), le32(b, int(off)+8)
		nameOff := off + 12
		descOff := off + alignUp(12+namesz, pad)
		if !inFile(nameOff, namesz, len(b)) || !inFile(descOff, descsz, len(b)) {
			return 0, false, fmt.Errorf("note at %#x: name (%d bytes) or descriptor (%d bytes) ends past the segment: %w",
				off, namesz, descsz, ErrMalformed)
		}
		if string(b[nameOff:nameOff+namesz]) == xenNoteName && typ == xenPhys32EntryNT && !found {
			desc := b[descOff : descOff+descsz]
			switch descsz {
			case 4:
				entry = uint64(le32(desc, 0))
			case 8:
				entry = le64(desc, 0)
			default:
				return 0, false, fmt.Errorf("descriptor of the Xen PVH entry note is %d bytes, want 4 or 8: %w", descsz, ErrMalformed)
			}
			if entry == 0 || entry > 0xFFFF_FFFF {
				return 0, false, fmt.Errorf("PVH entry %#x in the Xen note is not a 32-bit physical address: %w", entry, ErrMalformed)
			}
			found = true
		}
		// The last note's descriptor padding may be missing.
		off = min(descOff+alignUp(descsz, pad), uint64(len(b)))
	}
	return entry, found, nil
}
