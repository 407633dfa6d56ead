package boot

import (
	"encoding/binary"
)

// Test-side copies of on-disk and in-memory layouts, written from the
// specifications rather than taken from the package, so a wrong constant
// in the package shows up as a failing test.

var le = binary.LittleEndian

// testSeg is one program header of a synthesized ELF.
type testSeg struct {
	typ          uint32 // 0 means PT_LOAD
	paddr, vaddr uint64
	data         []byte
	memsz        uint64 // 0 means len(data)
	align        uint64
}

// elfSpec describes a synthesized ELF64 image.
type elfSpec struct {
	class   byte   // 0 means ELFCLASS64
	machine uint16 // 0 means EM_X86_64
	etype   uint16 // 0 means ET_EXEC
	entry   uint64
	segs    []testSeg
}

// buildELF lays out: ELF header, program headers, then each segment's
// bytes at a 16-byte aligned offset.
func buildELF(s elfSpec) []byte {
	class, machine, etype := s.class, s.machine, s.etype
	if class == 0 {
		class = 2
	}
	if machine == 0 {
		machine = 62
	}
	if etype == 0 {
		etype = 2
	}
	const ehsize, phsize = 64, 56
	off := ehsize + phsize*len(s.segs)
	offs := make([]int, len(s.segs))
	for i, sg := range s.segs {
		off = (off + 15) &^ 15
		offs[i] = off
		off += len(sg.data)
	}
	img := make([]byte, off)
	copy(img, "\x7fELF")
	img[4], img[5], img[6] = class, 1, 1
	le.PutUint16(img[16:], etype)
	le.PutUint16(img[18:], machine)
	le.PutUint32(img[20:], 1)
	le.PutUint64(img[24:], s.entry)
	le.PutUint64(img[32:], ehsize)
	le.PutUint16(img[52:], ehsize)
	le.PutUint16(img[54:], phsize)
	le.PutUint16(img[56:], uint16(len(s.segs)))
	for i, sg := range s.segs {
		ph := img[ehsize+i*phsize:]
		typ := sg.typ
		if typ == 0 {
			typ = 1
		}
		memsz := sg.memsz
		if memsz == 0 {
			memsz = uint64(len(sg.data))
		}
		le.PutUint32(ph[0:], typ)
		le.PutUint32(ph[4:], 7)
		le.PutUint64(ph[8:], uint64(offs[i]))
		le.PutUint64(ph[16:], sg.vaddr)
		le.PutUint64(ph[24:], sg.paddr)
		le.PutUint64(ph[32:], uint64(len(sg.data)))
		le.PutUint64(ph[40:], memsz)
		le.PutUint64(ph[48:], sg.align)
		copy(img[offs[i]:], sg.data)
	}
	return img
}

// note encodes one ELF note with 4-byte padding.
func note(name string, typ uint32, desc []byte) []byte {
	pad := func(n int) int { return (n + 3) &^ 3 }
	b := make([]byte, 12+pad(len(name)+1)+pad(len(desc)))
	le.PutUint32(b[0:], uint32(len(name)+1))
	le.PutUint32(b[4:], uint32(len(desc)))
	le.PutUint32(b[8:], typ)
	copy(b[12:], name)
	copy(b[12+pad(len(name)+1):], desc)
	return b
}

// note8 encodes one ELF note laid out for an 8-byte aligned segment:
// descriptor and end aligned to 8 from the note's start.
func note8(name string, typ uint32, desc []byte) []byte {
	up := func(n int) int { return (n + 7) &^ 7 }
	descOff := up(12 + len(name) + 1)
	b := make([]byte, up(descOff+len(desc)))
	le.PutUint32(b[0:], uint32(len(name)+1))
	le.PutUint32(b[4:], uint32(len(desc)))
	le.PutUint32(b[8:], typ)
	copy(b[12:], name)
	copy(b[descOff:], desc)
	return b
}

func pvhNote32(entry uint32) []byte {
	d := make([]byte, 4)
	le.PutUint32(d, entry)
	return note("Xen", 18, d)
}

func pvhNote64(entry uint64) []byte {
	d := make([]byte, 8)
	le.PutUint64(d, entry)
	return note("Xen", 18, d)
}

// pattern returns n bytes that differ from zero and from their neighbours.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed | 1
	}
	return b
}

// tinyELF is a tiny-kernel-like image: code and data at 1 MiB with a bss,
// entry 0x10 bytes in, and a PVH note in its own PT_NOTE segment.
func tinyELF() []byte {
	return buildELF(elfSpec{
		entry: 0x100010,
		segs: []testSeg{
			{paddr: 0x100000, vaddr: 0x100000, data: pattern(0x3000, 0x5A), memsz: 0x5000},
			{typ: 4, data: append(note("GNU", 3, []byte{1, 2, 3, 4}), pvhNote32(0x100020)...), align: 4},
		},
	})
}

// bzSpec describes a synthesized bzImage.
type bzSpec struct {
	setupSects  byte
	hdrLen      byte // byte at 0x201: header ends at 0x202 + hdrLen
	version     uint16
	loadflags   byte
	xloadflags  uint16
	relocatable byte
	kernelAlign uint32
	pref        uint64
	initSize    uint32
	cmdlineSize uint32
	initrdMax   uint32
	payload     []byte
	bootFlag    uint16
	magic       string
}

func defaultBz() bzSpec {
	return bzSpec{
		setupSects:  4,
		hdrLen:      0x6A, // ends at 0x26c, as protocol 2.15 headers do
		version:     0x020F,
		loadflags:   0x01 | 0x80, // LOADED_HIGH | CAN_USE_HEAP
		xloadflags:  0x0B,        // KERNEL_64 | CAN_BE_LOADED_ABOVE_4G | EFI_HANDOVER_64
		relocatable: 1,
		kernelAlign: 0x200000,
		pref:        0x1000000,
		initSize:    0x40000,
		cmdlineSize: 2047,
		initrdMax:   0x7FFFFFFF,
		payload:     pattern(0x2000, 0xB2),
		bootFlag:    0xAA55,
		magic:       "HdrS",
	}
}

// buildBz lays out a bzImage: (setup_sects+1) sectors of setup holding
// the header at 0x1f1, then the protected-mode payload.
func buildBz(s bzSpec) []byte {
	sects := int(s.setupSects)
	if sects == 0 {
		sects = 4
	}
	setup := (sects + 1) * 512
	img := make([]byte, setup+len(s.payload))
	img[0x1F1] = s.setupSects
	le.PutUint32(img[0x1F4:], uint32(len(s.payload)/16))
	le.PutUint16(img[0x1FA:], 0xFFFF) // vid_mode
	le.PutUint16(img[0x1FE:], s.bootFlag)
	img[0x200], img[0x201] = 0xEB, s.hdrLen
	copy(img[0x202:0x206], s.magic)
	le.PutUint16(img[0x206:], s.version)
	img[0x211] = s.loadflags
	le.PutUint32(img[0x214:], 0x100000) // code32_start default
	le.PutUint16(img[0x224:], 0xDE00)   // heap_end_ptr, as a real loader would leave it
	le.PutUint32(img[0x22C:], s.initrdMax)
	le.PutUint32(img[0x230:], s.kernelAlign)
	img[0x234] = s.relocatable
	img[0x235] = 21 // min_alignment
	le.PutUint16(img[0x236:], s.xloadflags)
	le.PutUint32(img[0x238:], s.cmdlineSize)
	le.PutUint64(img[0x258:], s.pref)
	le.PutUint32(img[0x260:], s.initSize)
	le.PutUint32(img[0x264:], 0x190) // handover_offset
	// Setup code after the header, so a header copy that runs long shows.
	for i := 0x26C; i < setup; i++ {
		img[i] = 0xCC
	}
	copy(img[setup:], s.payload)
	return img
}

// Zero-page offsets from the boot protocol and zero-page documents.
const (
	zpExtRamdiskImage = 0x0C0
	zpExtRamdiskSize  = 0x0C4
	zpExtCmdLinePtr   = 0x0C8
	zpE820Entries     = 0x1E8
	zpBootFlag        = 0x1FE
	zpHeader          = 0x202
	zpVersion         = 0x206
	zpTypeOfLoader    = 0x210
	zpLoadflags       = 0x211
	zpCode32Start     = 0x214
	zpRamdiskImage    = 0x218
	zpRamdiskSize     = 0x21C
	zpCmdLinePtr      = 0x228
	zpInitrdAddrMax   = 0x22C
	zpCmdlineSize     = 0x238
	zpE820Table       = 0x2D0
)

// zeroPage returns the zero page at 0x7000 of mem.
func zeroPage(mem []byte) []byte { return mem[0x7000:0x8000] }

// readE820 decodes the e820 table of a zero page.
func readE820(zp []byte) []E820Entry {
	n := int(zp[zpE820Entries])
	var e []E820Entry
	for i := range n {
		b := zp[zpE820Table+20*i:]
		e = append(e, E820Entry{Addr: le.Uint64(b), Size: le.Uint64(b[8:]), Type: le.Uint32(b[16:])})
	}
	return e
}

// cstring returns the NUL-terminated string at b.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
