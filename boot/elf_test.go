package boot

import (
	"errors"
	"strings"
	"testing"
)

func TestParseELF(t *testing.T) {
	const linuxVirt = 0xFFFF_FFFF_8100_0000
	tests := []struct {
		name      string
		img       []byte
		wantEntry uint64
		wantPVH   uint64
		wantLoads int
	}{
		{"tiny kernel with PVH note", tinyELF(), 0x100010, 0x100020, 1},
		{
			// Linux's vmlinux: segments linked high, p_paddr physical,
			// e_entry already physical.
			"vmlinux-like, physical entry",
			buildELF(elfSpec{entry: 0x1000000, segs: []testSeg{
				{paddr: 0x1000000, vaddr: linuxVirt, data: pattern(0x1000, 1)},
				{paddr: 0x1200000, vaddr: 0, data: pattern(0x100, 2)}, // percpu-like
				{typ: 4, data: pvhNote64(0x1000100), align: 4},
			}}),
			0x1000000, 0x1000100, 2,
		},
		{
			"virtual entry translated through its segment",
			buildELF(elfSpec{entry: linuxVirt + 0x40, segs: []testSeg{
				{paddr: 0x1000000, vaddr: linuxVirt, data: pattern(0x1000, 1)},
			}}),
			0x1000040, 0, 1,
		},
		{
			"entry in bss",
			buildELF(elfSpec{entry: 0x201000, segs: []testSeg{
				{paddr: 0x200000, vaddr: 0x200000, data: pattern(0x100, 1), memsz: 0x2000},
			}}),
			0x201000, 0, 1,
		},
		{
			"empty PT_LOAD ignored, 8-byte aligned note segment",
			buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
				{paddr: 0x100000, vaddr: 0x100000, data: pattern(0x100, 1)},
				{paddr: 0x300000, vaddr: 0x300000}, // memsz 0
				{typ: 4, data: pvhNote64(0x100004), align: 8},
			}}),
			0x100000, 0x100004, 1,
		},
		{
			"8-byte padding after a GNU property note",
			buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
				{paddr: 0x100000, vaddr: 0x100000, data: pattern(0x100, 1)},
				{typ: 4, data: append(note8("GNU", 5, pattern(12, 3)), note8("Xen", 18, []byte{8, 0, 0x10, 0})...), align: 8},
			}}),
			0x100000, 0x100008, 1,
		},
		{
			"5-byte name padded to 4",
			buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
				{paddr: 0x100000, vaddr: 0x100000, data: pattern(0x100, 1)},
				{typ: 4, data: append(note("Linux", 6, pattern(5, 3)), pvhNote32(0x10000C)...), align: 4},
			}}),
			0x100000, 0x10000C, 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKernel(tt.img)
			if err != nil {
				t.Fatalf("ParseKernel: %v", err)
			}
			if k.Kind != KindELF || k.Protocol != 0 {
				t.Errorf("kind %v protocol %#x, want ELF64 0", k.Kind, k.Protocol)
			}
			if k.Entry64 != tt.wantEntry {
				t.Errorf("Entry64 = %#x, want %#x", k.Entry64, tt.wantEntry)
			}
			if k.PVHEntry != tt.wantPVH {
				t.Errorf("PVHEntry = %#x, want %#x", k.PVHEntry, tt.wantPVH)
			}
			if len(k.loads) != tt.wantLoads {
				t.Errorf("%d loads, want %d", len(k.loads), tt.wantLoads)
			}
		})
	}
}

func TestParseELFErrors(t *testing.T) {
	good := tinyELF()
	mod := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	phdr := func(i int) int { return 64 + 56*i }
	tests := []struct {
		name string
		img  []byte
		want error
	}{
		{"empty", nil, ErrUnknownFormat},
		{"random bytes", pattern(4096, 9), ErrUnknownFormat},
		{"ELF magic only", []byte("\x7fELF"), ErrTruncated},
		{"ELF32", mod(func(b []byte) { b[4] = 1 }), ErrUnknownFormat},
		{"big endian", mod(func(b []byte) { b[5] = 2 }), ErrUnsupported},
		{"bad ident version", mod(func(b []byte) { b[6] = 0 }), ErrMalformed},
		{"ET_DYN", buildELF(elfSpec{etype: 3, entry: 0x100000, segs: []testSeg{{paddr: 0x100000, vaddr: 0x100000, data: []byte{1}}}}), ErrUnsupported},
		{"aarch64", buildELF(elfSpec{machine: 183, entry: 0x100000, segs: []testSeg{{paddr: 0x100000, vaddr: 0x100000, data: []byte{1}}}}), ErrUnsupported},
		{"phentsize 32", mod(func(b []byte) { le.PutUint16(b[54:], 32) }), ErrMalformed},
		{"phnum 0", mod(func(b []byte) { le.PutUint16(b[56:], 0) }), ErrMalformed},
		{"phnum absurd", mod(func(b []byte) { le.PutUint16(b[56:], 0xFFFF) }), ErrMalformed},
		{"phoff past end", mod(func(b []byte) { le.PutUint64(b[32:], uint64(len(b))) }), ErrTruncated},
		{"phoff wraps", mod(func(b []byte) { le.PutUint64(b[32:], ^uint64(0)-8) }), ErrTruncated},
		{"segment offset past end", mod(func(b []byte) { le.PutUint64(b[phdr(0)+8:], uint64(len(b))) }), ErrTruncated},
		{"segment filesz huge", mod(func(b []byte) { le.PutUint64(b[phdr(0)+32:], ^uint64(0)) }), ErrTruncated},
		{"filesz > memsz", mod(func(b []byte) { le.PutUint64(b[phdr(0)+40:], 0x10) }), ErrMalformed},
		{"paddr wraps", mod(func(b []byte) { le.PutUint64(b[phdr(0)+24:], ^uint64(0)-0x100) }), ErrMalformed},
		{"entry outside segments", mod(func(b []byte) { le.PutUint64(b[24:], 0x900000) }), ErrMalformed},
		{"no PT_LOAD", buildELF(elfSpec{entry: 0, segs: []testSeg{{typ: 4, data: pvhNote32(0x100000)}}}), ErrMalformed},
		{"overlapping segments", buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
			{paddr: 0x100000, vaddr: 0x100000, data: pattern(0x2000, 1)},
			{paddr: 0x101000, vaddr: 0x900000, data: pattern(0x100, 2)},
		}}), ErrMalformed},
		{"note segment past end", mod(func(b []byte) { le.PutUint64(b[phdr(1)+32:], uint64(len(b))) }), ErrTruncated},
		{"note namesz past segment", buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
			{paddr: 0x100000, vaddr: 0x100000, data: []byte{1}},
			{typ: 4, data: func() []byte { n := pvhNote32(0x100000); le.PutUint32(n, 0x7FFFFFFF); return n }()},
		}}), ErrMalformed},
		{"note header cut", buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
			{paddr: 0x100000, vaddr: 0x100000, data: []byte{1}},
			{typ: 4, data: pvhNote32(0x100000)[:8]},
		}}), ErrMalformed},
		{"PVH descriptor 2 bytes", buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
			{paddr: 0x100000, vaddr: 0x100000, data: []byte{1}},
			{typ: 4, data: note("Xen", 18, []byte{1, 2})},
		}}), ErrMalformed},
		{"PVH entry above 4 GiB", buildELF(elfSpec{entry: 0x100000, segs: []testSeg{
			{paddr: 0x100000, vaddr: 0x100000, data: []byte{1}},
			{typ: 4, data: pvhNote64(1 << 32)},
		}}), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKernel(tt.img)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseKernel = %v, %v; want error %v", k, err, tt.want)
			}
		})
	}
}

// TestParseELFTruncated cuts a valid image at every length: each prefix
// must be rejected (the segment data runs to the end of the file).
func TestParseELFTruncated(t *testing.T) {
	img := tinyELF()
	for n := range len(img) {
		k, err := ParseKernel(img[:n])
		if err == nil {
			t.Fatalf("ParseKernel(first %d of %d bytes) = %+v, want error", n, len(img), k)
		}
		if n >= 4 && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("ParseKernel(first %d bytes): %v, want truncated or malformed", n, err)
		}
	}
	if _, err := ParseKernel(img); err != nil {
		t.Fatalf("full image: %v", err)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindELF: "ELF64", KindBzImage: "bzImage", 0: "kind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// TestCheckELFLoadAtGap: a segment beyond low RAM in a guest whose RAM
// continues above 4 GiB is refused with the gap named (no mapping needed).
func TestCheckELFLoadAtGap(t *testing.T) {
	err := checkELFLoad(elfLoad{paddr: MMIOGapStart - 0x1000, memsz: 0x2000}, MMIOGapStart)
	if !errors.Is(err, ErrNoFit) || !strings.Contains(err.Error(), "below the MMIO gap") {
		t.Errorf("checkELFLoad across the gap: %v", err)
	}
	if err := checkELFLoad(elfLoad{paddr: MMIOGapStart - 0x2000, memsz: 0x2000}, MMIOGapStart); err != nil {
		t.Errorf("segment ending at the gap: %v", err)
	}
}
