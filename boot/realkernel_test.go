package boot_test

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/govmm/govmm/boot"
	"github.com/govmm/govmm/internal/testutil"
)

// These tests parse the project's own Linux build (testdata/linux), so the
// loader is checked against headers a real kernel build produced, not only
// against images the tests synthesize.

func readReal(t *testing.T) (vmlinux, bzImage []byte) {
	t.Helper()
	vp, bp := testutil.LinuxKernel(t)
	v, err := os.ReadFile(vp)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bp)
	if err != nil {
		t.Fatal(err)
	}
	return v, b
}

func TestRealBzImage(t *testing.T) {
	_, bz := readReal(t)
	k, err := boot.ParseKernel(bz)
	if err != nil {
		t.Fatalf("ParseKernel(bzImage): %v", err)
	}
	if k.Kind != boot.KindBzImage || k.Protocol < 0x020c {
		t.Fatalf("kind %v protocol %#x", k.Kind, k.Protocol)
	}
	const memSize = 256 << 20
	mem := make([]byte, memSize)
	cmdline := "console=ttyS0 panic=-1"
	entry, err := boot.Load(mem, k, boot.Config{MemSize: memSize, Cmdline: cmdline, Initrd: []byte("initrd!"), CPUs: 2})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	zp := mem[boot.ZeroPageAddr:]
	le := binary.LittleEndian
	if string(zp[0x202:0x206]) != "HdrS" || le.Uint16(zp[0x1fe:]) != 0xaa55 {
		t.Errorf("setup header not copied into the zero page")
	}
	if zp[0x210] != 0xff {
		t.Errorf("type_of_loader %#x, want 0xff", zp[0x210])
	}
	if zp[0x211]&0x01 == 0 {
		t.Errorf("loadflags %#x lack LOADED_HIGH", zp[0x211])
	}
	code32 := le.Uint32(zp[0x214:])
	if entry.RIP != uint64(code32)+0x200 {
		t.Errorf("RIP %#x, want code32_start %#x + 0x200", entry.RIP, code32)
	}
	if align := le.Uint32(zp[0x230:]); align != 0 && code32%align != 0 {
		t.Errorf("kernel at %#x is not aligned to kernel_alignment %#x", code32, align)
	}
	ptr := le.Uint32(zp[0x228:])
	if got := string(mem[ptr : ptr+uint32(len(cmdline))]); got != cmdline || mem[ptr+uint32(len(cmdline))] != 0 {
		t.Errorf("command line at %#x = %q", ptr, got)
	}
	rd, rdSize := le.Uint32(zp[0x218:]), le.Uint32(zp[0x21c:])
	if rdSize != 7 || string(mem[rd:rd+7]) != "initrd!" || rd%4096 != 0 {
		t.Errorf("initrd at %#x size %d", rd, rdSize)
	}
	if max := le.Uint32(zp[0x22c:]); rd+rdSize-1 > max {
		t.Errorf("initrd ends above initrd_addr_max %#x", max)
	}
	if entry.RSI != boot.ZeroPageAddr {
		t.Errorf("RSI %#x, want the zero page", entry.RSI)
	}
}

func TestRealBzImageCorrupted(t *testing.T) {
	_, bz := readReal(t)
	corrupt := func(f func(b []byte) []byte) []byte {
		c := append([]byte(nil), bz...)
		return f(c)
	}
	for _, tc := range []struct {
		name string
		img  []byte
		want []error
	}{
		{"wrong HdrS magic", corrupt(func(b []byte) []byte { copy(b[0x202:], "XXXX"); return b }), []error{boot.ErrUnknownFormat, boot.ErrMalformed}},
		{"wrong boot flag", corrupt(func(b []byte) []byte { b[0x1fe] = 0; return b }), []error{boot.ErrUnknownFormat, boot.ErrMalformed}},
		{"protocol 2.06", corrupt(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[0x206:], 0x0206); return b }), []error{boot.ErrUnsupported}},
		{"no 64-bit entry", corrupt(func(b []byte) []byte { b[0x236] &^= 1; return b }), []error{boot.ErrUnsupported}},
		{"truncated to half", bz[:len(bz)/2], []error{boot.ErrTruncated}},
		{"truncated in the header", bz[:0x220], []error{boot.ErrTruncated, boot.ErrUnknownFormat}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := boot.ParseKernel(tc.img)
			ok := false
			for _, w := range tc.want {
				ok = ok || errors.Is(err, w)
			}
			if !ok {
				t.Fatalf("ParseKernel = %v, want one of %v", err, tc.want)
			}
		})
	}
	t.Run("command line too long", func(t *testing.T) {
		k, err := boot.ParseKernel(bz)
		if err != nil {
			t.Fatal(err)
		}
		size := binary.LittleEndian.Uint32(bz[0x238:])
		_, err = boot.Load(make([]byte, 64<<20), k, boot.Config{MemSize: 64 << 20, Cmdline: strings.Repeat("x", int(size)+1)})
		if !errors.Is(err, boot.ErrCmdlineTooLong) {
			t.Fatalf("Load with a %d-byte command line = %v, want ErrCmdlineTooLong", size+1, err)
		}
	})
}

func TestRealVmlinux(t *testing.T) {
	v, _ := readReal(t)
	k, err := boot.ParseKernel(v)
	if err != nil {
		t.Fatalf("ParseKernel(vmlinux): %v", err)
	}
	if k.Kind != boot.KindELF {
		t.Fatalf("kind %v", k.Kind)
	}
	// Linux's 64-bit entry is startup_64 at the start of .text, 16 MiB.
	if k.Entry64 != 0x1000000 {
		t.Errorf("Entry64 %#x, want 0x1000000", k.Entry64)
	}
	if _, err := boot.ParseKernel(v[:len(v)/3]); !errors.Is(err, boot.ErrTruncated) {
		t.Errorf("truncated vmlinux: %v", err)
	}
}
