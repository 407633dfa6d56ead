package boot

import (
	"bytes"
	"testing"
)

// seeds are valid images and near-misses for both formats.
func seeds() [][]byte {
	bz := buildBz(defaultBz())
	nonReloc := defaultBz()
	nonReloc.relocatable, nonReloc.pref = 0, 0x100000
	elf := tinyELF()
	return [][]byte{
		nil,
		[]byte("\x7fELF"),
		elf,
		elf[:100],
		buildELF(elfSpec{entry: 0xFFFF_FFFF_8100_0040, segs: []testSeg{
			{paddr: 0x100000, vaddr: 0xFFFF_FFFF_8100_0000, data: pattern(0x200, 1), memsz: 0x1000},
			{typ: 4, data: pvhNote64(0x100000), align: 8},
		}}),
		bz,
		bz[:0x270],
		buildBz(nonReloc),
	}
}

// FuzzParseKernel: no input may panic the parser, and whatever it accepts
// must be self-consistent.
func FuzzParseKernel(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		k, err := ParseKernel(img)
		if err != nil {
			if k != nil {
				t.Fatal("kernel returned with an error")
			}
			return
		}
		switch k.Kind {
		case KindELF:
			if _, ok := elfEntryPhys(k.loads, k.Entry64); !ok {
				t.Fatalf("entry %#x outside the segments", k.Entry64)
			}
			for _, l := range k.loads {
				if !inFile(l.off, l.filesz, len(img)) || l.filesz > l.memsz {
					t.Fatalf("accepted bad segment %+v", l)
				}
			}
		case KindBzImage:
			if len(k.bz.payload) == 0 || k.bz.hdrEnd > len(img) || k.Protocol < 0x020C {
				t.Fatalf("accepted bad bzImage: %+v", k.bz)
			}
		default:
			t.Fatalf("kind %v", k.Kind)
		}
	})
}

// FuzzLoad: random images (and command lines, initrds, CPU counts) loaded
// into a small guest either fail cleanly or produce a consistent image.
func FuzzLoad(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s, uint16(20), uint32(0x1000), uint8(1))
	}
	f.Fuzz(func(t *testing.T, img []byte, cmdLen uint16, initrdLen uint32, cpus uint8) {
		k, err := ParseKernel(img)
		if err != nil {
			return
		}
		const memSize = 4 * mib
		mem := make([]byte, memSize)
		cmd := string(bytes.Repeat([]byte{'c'}, int(cmdLen)))
		initrd := pattern(int(initrdLen%(3*mib)), 0x21)
		st, err := Load(mem, k, Config{Cmdline: cmd, Initrd: initrd, CPUs: int(cpus)})
		if err != nil {
			if !allBytes(mem, 0) {
				t.Fatal("failed Load modified memory")
			}
			return
		}
		if st.RIP >= memSize || st.RSI != ZeroPageAddr {
			t.Fatalf("RIP %#x RSI %#x", st.RIP, st.RSI)
		}
		zp := zeroPage(mem)
		if le.Uint16(zp[zpBootFlag:]) != 0xAA55 || string(zp[zpHeader:zpHeader+4]) != "HdrS" {
			t.Fatal("zero page lacks its magic")
		}
		if cstring(mem[le.Uint32(zp[zpCmdLinePtr:]):]) != cmd {
			t.Fatal("command line not at cmd_line_ptr")
		}
		ri, rs := le.Uint32(zp[zpRamdiskImage:]), le.Uint32(zp[zpRamdiskSize:])
		if int(rs) != len(initrd) || (rs > 0 && !bytes.Equal(mem[ri:ri+rs], initrd)) {
			t.Fatal("initrd not at ramdisk_image")
		}
		if cpus > 0 && cpus <= MaxCPUs {
			checkMPTable(t, mem, int(cpus))
		}
		if pa, ok := walk(mem, st.CR3, st.RIP); !ok || pa != st.RIP {
			t.Fatal("entry point not identity mapped")
		}
	})
}
