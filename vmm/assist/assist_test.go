package assist

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"testing"

	"github.com/govmm/govmm/kvm"
)

// h parses space-separated hex bytes.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

const kernelRIP = 0xffffffff81000000

// baseRegs fills every register with a distinct value that is not a
// plausible address of the test's operands, so that a decoder picking
// the wrong register reads unmapped memory or yields the wrong count.
func baseRegs() Regs {
	var r Regs
	for i := range r.GPR {
		r.GPR[i] = 0xdead_0000_0000_0000 | uint64(i)<<40 | 0x5a5a5a5a
	}
	r.RIP = kernelRIP
	r.RFLAGS = 0x2 | arithFlags | FlagAC | 0x200 // all status flags set, AC, IF
	r.FSBase = 0xffff_8000_0000_0000
	r.GSBase = 0xffff_9000_0000_0000
	return r
}

// oneOperand is guest memory holding 8 bytes at addr and nothing else.
type oneOperand struct {
	addr  uint64
	bytes [8]byte
	reads []int // length of every read
}

func (m *oneOperand) ReadLinear(addr uint64, p []byte) error {
	m.reads = append(m.reads, len(p))
	if addr != m.addr || len(p) > len(m.bytes) {
		return fmt.Errorf("test memory: read of %d bytes at %#x, only %#x is mapped: %w", len(p), addr, m.addr, ErrNotMapped)
	}
	copy(p, m.bytes[:])
	return nil
}

func TestPopcnt(t *testing.T) {
	type tc struct {
		name  string
		insn  string
		set   func(r *Regs)
		mem   bool   // memory form: operand at memAt
		memAt uint64 // linear address the instruction must read
		val   uint64 // the 8 bytes there (little-endian)
		size  int    // expected read size
		dst   int
		want  uint64 // full 64-bit destination after
		zf    bool
	}
	cases := []tc{
		// Register forms.
		{name: "r32 zero-extends", insn: "f3 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 0x1_0000_00f0 }, dst: RAX, want: 4},
		{name: "r64", insn: "f3 48 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 0x1_0000_00f0 }, dst: RAX, want: 5},
		{name: "r16 keeps bits 63:16", insn: "66 f3 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 0xffff_0003; r.GPR[RAX] = 0x1122334455667788 }, dst: RAX, want: 0x1122334455660002},
		{name: "r16 prefixes reversed", insn: "f3 66 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 0xffff_0003; r.GPR[RAX] = 0x1122334455667788 }, dst: RAX, want: 0x1122334455660002},
		{name: "r64 REX.R REX.B all ones", insn: "f3 4d 0f b8 d1", set: func(r *Regs) { r.GPR[R9] = ^uint64(0) }, dst: R10, want: 64},
		{name: "r16 from r9w", insn: "66 f3 41 0f b8 c1", set: func(r *Regs) { r.GPR[R9] = 0x12345_8001; r.GPR[RAX] = ^uint64(0) }, dst: RAX, want: 0xffff_ffff_ffff_0002},
		{name: "REX.W wins over 66", insn: "66 f3 48 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = ^uint64(0) }, dst: RAX, want: 64},
		{name: "r32 all ones", insn: "f3 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = ^uint64(0) }, dst: RAX, want: 32},
		{name: "r32 zero source clears upper dest", insn: "f3 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 0xffffffff_00000000; r.GPR[RAX] = ^uint64(0) }, dst: RAX, want: 0, zf: true},
		{name: "r64 zero source", insn: "f3 48 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 0 }, dst: RAX, want: 0, zf: true},
		{name: "r16 zero source", insn: "66 f3 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 0xffff_0000; r.GPR[RAX] = 0xabcd_ffff }, dst: RAX, want: 0xabcd_0000, zf: true},
		{name: "same register", insn: "f3 48 0f b8 c0", set: func(r *Regs) { r.GPR[RAX] = 0xff }, dst: RAX, want: 8},
		{name: "segment override on reg form ignored", insn: "64 f3 48 0f b8 c1", set: func(r *Regs) { r.GPR[RCX] = 7 }, dst: RAX, want: 3},

		// Memory forms.
		{name: "(%rax)", insn: "f3 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0x2000 }, mem: true, memAt: 0x2000, val: 0xffffffff_0f0f0f0f, size: 4, dst: RCX, want: 16},
		{name: "0x10(%rbx) r64", insn: "f3 48 0f b8 53 10", set: func(r *Regs) { r.GPR[RBX] = 0x3000 }, mem: true, memAt: 0x3010, val: ^uint64(0), size: 8, dst: RDX, want: 64},
		{name: "-0x80(%rbp) disp8 negative", insn: "f3 0f b8 75 80", set: func(r *Regs) { r.GPR[RBP] = 0x4080 }, mem: true, memAt: 0x4000, val: 1, size: 4, dst: RSI, want: 1},
		{name: "disp32(%rsi)", insn: "f3 0f b8 be 78 56 34 12", set: func(r *Regs) { r.GPR[RSI] = 0x1000 }, mem: true, memAt: 0x12346678, val: 0x8000_0001, size: 4, dst: RDI, want: 2},
		{name: "disp32 negative", insn: "f3 0f b8 be 00 ff ff ff", set: func(r *Regs) { r.GPR[RSI] = 0x1000 }, mem: true, memAt: 0xf00, val: 3, size: 4, dst: RDI, want: 2},
		{name: "RIP-relative", insn: "f3 48 0f b8 05 00 01 00 00", mem: true, memAt: kernelRIP + 9 + 0x100, val: 0xf0, size: 8, dst: RAX, want: 4},
		{name: "RIP-relative negative", insn: "f3 0f b8 05 f8 ff ff ff", mem: true, memAt: kernelRIP, val: 0x0700_0000_0000_0003, size: 4, dst: RAX, want: 2},
		{name: "RIP-relative ignores REX.B", insn: "f3 41 0f b8 05 10 00 00 00", mem: true, memAt: kernelRIP + 9 + 0x10, val: 0x3f, size: 4, dst: RAX, want: 6},
		{name: "(%rax,%rcx,4)", insn: "f3 0f b8 14 88", set: func(r *Regs) { r.GPR[RAX] = 0x5000; r.GPR[RCX] = 3 }, mem: true, memAt: 0x500c, val: 0x11, size: 4, dst: RDX, want: 2},
		{name: "8(%r8,%r12,8) REX.B REX.X", insn: "f3 4f 0f b8 5c e0 08", set: func(r *Regs) { r.GPR[R8] = 0x6000; r.GPR[R12] = 2 }, mem: true, memAt: 0x6018, val: 0x1_0000_0001, size: 8, dst: R11, want: 2},
		{name: "0x1000(,%rbx,2) no base", insn: "f3 0f b8 04 5d 00 10 00 00", set: func(r *Regs) { r.GPR[RBX] = 0x100 }, mem: true, memAt: 0x1200, val: 0x7, size: 4, dst: RAX, want: 3},
		{name: "SIB no base ignores REX.B", insn: "f3 41 0f b8 04 25 00 c0 00 00", mem: true, memAt: 0xc000, val: 0xf, size: 4, dst: RAX, want: 4},
		{name: "(%rsp)", insn: "f3 0f b8 04 24", set: func(r *Regs) { r.GPR[RSP] = 0x7000 }, mem: true, memAt: 0x7000, val: 1, size: 4, dst: RAX, want: 1},
		{name: "SIB index 100 means no index", insn: "f3 0f b8 04 20", set: func(r *Regs) { r.GPR[RAX] = 0xb000 }, mem: true, memAt: 0xb000, val: 3, size: 4, dst: RAX, want: 2},
		{name: "SIB index 100 with REX.X is r12", insn: "f3 42 0f b8 04 20", set: func(r *Regs) { r.GPR[RAX] = 0xb000; r.GPR[R12] = 8 }, mem: true, memAt: 0xb008, val: 3, size: 4, dst: RAX, want: 2},
		{name: "(%r12) needs SIB", insn: "f3 41 0f b8 04 24", set: func(r *Regs) { r.GPR[R12] = 0x7100 }, mem: true, memAt: 0x7100, val: 0xff, size: 4, dst: RAX, want: 8},
		{name: "0(%r13) disp8", insn: "f3 41 0f b8 45 00", set: func(r *Regs) { r.GPR[R13] = 0x7200 }, mem: true, memAt: 0x7200, val: 0x3, size: 4, dst: RAX, want: 2},
		{name: "0(%rbp) disp8", insn: "f3 0f b8 45 00", set: func(r *Regs) { r.GPR[RBP] = 0x7300 }, mem: true, memAt: 0x7300, val: 0x5, size: 4, dst: RAX, want: 2},
		{name: "(%rax,%r12,1),%r15", insn: "f3 4e 0f b8 3c 20", set: func(r *Regs) { r.GPR[RAX] = 0x9000; r.GPR[R12] = 0x10 }, mem: true, memAt: 0x9010, val: 0x1f, size: 8, dst: R15, want: 5},
		{name: "-0x10(%rsp,%rbp,2),%r8w", insn: "66 f3 44 0f b8 44 6c f0", set: func(r *Regs) { r.GPR[RSP] = 0xa000; r.GPR[RBP] = 0x20; r.GPR[R8] = 0x7777_7777_7777_7777 }, mem: true, memAt: 0xa030, val: 0xffff_ffff_ffff_0101, size: 2, dst: R8, want: 0x7777_7777_7777_0002},
		{name: "16-bit (%rbx)", insn: "66 f3 0f b8 03", set: func(r *Regs) { r.GPR[RBX] = 0x8000; r.GPR[RAX] = 0xaaaa_bbbb_cccc_dddd }, mem: true, memAt: 0x8000, val: 0xffff_ffff_ffff_01ff, size: 2, dst: RAX, want: 0xaaaa_bbbb_cccc_0009},
		{name: "%fs:0x28", insn: "64 f3 48 0f b8 04 25 28 00 00 00", mem: true, memAt: 0xffff_8000_0000_0028, val: 0xdead_beef, size: 8, dst: RAX, want: uint64(bits.OnesCount64(0xdead_beef))},
		{name: "%gs:(%rdi)", insn: "65 f3 0f b8 0f", set: func(r *Regs) { r.GPR[RDI] = 0x40 }, mem: true, memAt: 0xffff_9000_0000_0040, val: 0x101, size: 4, dst: RCX, want: 2},
		{name: "ds override ignored", insn: "3e f3 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0x2000 }, mem: true, memAt: 0x2000, val: 1, size: 4, dst: RCX, want: 1},
		{name: "fs then ds: last override wins", insn: "64 3e f3 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0x2000 }, mem: true, memAt: 0x2000, val: 1, size: 4, dst: RCX, want: 1},
		{name: "ds then gs: last override wins", insn: "3e 65 f3 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0x2000 }, mem: true, memAt: 0xffff_9000_0000_2000, val: 1, size: 4, dst: RCX, want: 1},
		{name: "addr32 truncates (%eax)", insn: "67 f3 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0xdead_0000_2000 }, mem: true, memAt: 0x2000, val: 0x3, size: 4, dst: RCX, want: 2},
		{name: "addr32 wraps base+index*4+disp", insn: "67 f3 0f b8 4c 88 10", set: func(r *Regs) { r.GPR[RAX] = 0x1_ffff_fff0; r.GPR[RCX] = 0x10 }, mem: true, memAt: 0x40, val: 0x7, size: 4, dst: RCX, want: 3},
		{name: "addr32 RIP-relative", insn: "67 f3 0f b8 05 10 00 00 00", set: func(r *Regs) { r.RIP = 0xffff_fff0 }, mem: true, memAt: 0x9, val: 0x1, size: 4, dst: RAX, want: 1},
		{name: "addr32 then gs base", insn: "65 67 f3 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0x1_0000_2000 }, mem: true, memAt: 0xffff_9000_0000_2000, val: 1, size: 4, dst: RCX, want: 1},
		{name: "memory zero source", insn: "f3 48 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0x2000 }, mem: true, memAt: 0x2000, val: 0, size: 8, dst: RCX, want: 0, zf: true},
		{name: "memory 32-bit zero with garbage beyond", insn: "f3 0f b8 08", set: func(r *Regs) { r.GPR[RAX] = 0x2000 }, mem: true, memAt: 0x2000, val: 0xffffffff_00000000, size: 4, dst: RCX, want: 0, zf: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			insn := h(c.insn)
			regs := baseRegs()
			if c.set != nil {
				c.set(&regs)
			}
			before := regs
			m := &oneOperand{addr: c.memAt}
			binary.LittleEndian.PutUint64(m.bytes[:], c.val)
			var mem Memory = m
			if !c.mem {
				m.addr = 1 // any read fails
			}
			// Trailing bytes after the instruction must not change anything.
			padded := append(append([]byte(nil), insn...), 0x90, 0xcc, 0x0f)
			a, err := Apply(padded, regs, mem)
			if err != nil {
				t.Fatalf("Apply(% x): %v", insn, err)
			}
			if a.Kind != KindPOPCNT || a.Length != len(insn) || a.InjectBP {
				t.Fatalf("Apply = kind %v length %d injectBP %v, want popcnt length %d", a.Kind, a.Length, a.InjectBP, len(insn))
			}
			if regs != before {
				t.Fatal("Apply modified its input registers")
			}
			if c.mem {
				if len(m.reads) != 1 || m.reads[0] != c.size {
					t.Fatalf("memory reads %v, want one of %d bytes", m.reads, c.size)
				}
			} else if len(m.reads) != 0 {
				t.Fatalf("register form read memory: %v", m.reads)
			}
			want := before
			want.GPR[c.dst] = c.want
			want.RIP = before.RIP + uint64(len(insn))
			want.RFLAGS = before.RFLAGS &^ arithFlags
			if c.zf {
				want.RFLAGS |= FlagZF
			}
			if a.NewRegs != want {
				for i := range want.GPR {
					if a.NewRegs.GPR[i] != want.GPR[i] {
						t.Errorf("GPR[%d] = %#x, want %#x", i, a.NewRegs.GPR[i], want.GPR[i])
					}
				}
				t.Fatalf("regs after:\n got RIP %#x RFLAGS %#x\nwant RIP %#x RFLAGS %#x", a.NewRegs.RIP, a.NewRegs.RFLAGS, want.RIP, want.RFLAGS)
			}
			k, n, err := Decode(padded)
			if err != nil || k != KindPOPCNT || n != len(insn) {
				t.Fatalf("Decode = %v, %d, %v; want popcnt, %d", k, n, err, len(insn))
			}
		})
	}
}

func TestPopcntFlagsExact(t *testing.T) {
	cases := []struct {
		name       string
		in, src    uint64
		wantRFLAGS uint64
	}{
		{"all status flags set, nonzero source", 0x2 | arithFlags, 5, 0x2},
		{"all status flags set, zero source", 0x2 | arithFlags, 0, 0x2 | FlagZF},
		{"clear flags, zero source", 0x2, 0, 0x2 | FlagZF},
		{"clear flags, nonzero source", 0x2, 1, 0x2},
		{"other flags kept (IF, DF, AC, TF, IOPL)", 0x2 | 0x200 | 0x400 | FlagAC | 0x100 | 0x3000 | FlagCF | FlagSF, 3, 0x2 | 0x200 | 0x400 | FlagAC | 0x100 | 0x3000},
		{"ZF set before, nonzero source clears it", 0x2 | FlagZF, 1, 0x2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := baseRegs()
			r.RFLAGS = c.in
			r.GPR[RCX] = c.src
			a, err := Apply(h("f3 48 0f b8 c1"), r, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a.NewRegs.RFLAGS != c.wantRFLAGS {
				t.Fatalf("RFLAGS = %#x, want %#x", a.NewRegs.RFLAGS, c.wantRFLAGS)
			}
			for _, f := range []struct {
				name string
				bit  uint64
				want bool
			}{{"CF", FlagCF, false}, {"PF", FlagPF, false}, {"AF", FlagAF, false}, {"SF", FlagSF, false}, {"OF", FlagOF, false}, {"ZF", FlagZF, c.src == 0}} {
				if got := a.NewRegs.RFLAGS&f.bit != 0; got != f.want {
					t.Errorf("%s = %v, want %v", f.name, got, f.want)
				}
			}
		})
	}
}

func TestSimpleAssists(t *testing.T) {
	cases := []struct {
		name     string
		insn     string
		kind     Kind
		length   int
		rflags   uint64
		want     uint64 // RFLAGS after
		injectBP bool
	}{
		{"int3", "cc", KindInt3, 1, 0x246, 0x246, true},
		{"int3 with a segment prefix", "2e cc", KindInt3, 2, 0x246, 0x246, true},
		{"clac clears AC only", "0f 01 ca", KindCLAC, 3, 0x2 | FlagAC | arithFlags | 0x200, 0x2 | arithFlags | 0x200, false},
		{"clac with AC already clear", "0f 01 ca", KindCLAC, 3, 0x246, 0x246, false},
		{"stac sets AC only", "0f 01 cb", KindSTAC, 3, 0x246, 0x246 | FlagAC, false},
		{"stac with AC already set", "0f 01 cb", KindSTAC, 3, 0x2 | FlagAC, 0x2 | FlagAC, false},
		{"clac with a ds prefix", "3e 0f 01 ca", KindCLAC, 4, FlagAC | 0x2, 0x2, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := baseRegs()
			r.RFLAGS = c.rflags
			insn := append(h(c.insn), 0xf3, 0x0f, 0xb8, 0xc1) // a following instruction is not consumed
			a, err := Apply(insn, r, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := r
			want.RIP += uint64(c.length)
			want.RFLAGS = c.want
			if a.Kind != c.kind || a.Length != c.length || a.InjectBP != c.injectBP || a.NewRegs != want {
				t.Fatalf("Apply = %+v\nwant kind %v length %d injectBP %v regs %+v", a, c.kind, c.length, c.injectBP, want)
			}
		})
	}
}

func TestUnsupported(t *testing.T) {
	cases := []struct {
		name, insn, reason string
	}{
		{"empty", "", "truncated"},
		{"xsave", "0f ae 20", "0f ae"},
		{"xrstor", "0f ae 28", "0f ae"},
		{"cmpxchg16b", "48 0f c7 0f", "0f c7"},
		{"nop", "90", "opcode 90"},
		{"garbage", "ff ff ff ff", "opcode ff"},
		{"vmcall", "0f 01 c1", "0f 01 c1"},
		{"lone 0f", "0f", "truncated"},
		{"0f 01 truncated", "0f 01", "truncated"},
		{"popcnt without modrm", "f3 0f b8", "truncated"},
		{"popcnt without SIB", "f3 0f b8 04", "truncated"},
		{"popcnt disp8 missing", "f3 0f b8 40", "truncated"},
		{"popcnt disp32 truncated", "f3 0f b8 80 01 02", "truncated"},
		{"popcnt RIP-relative disp truncated", "f3 0f b8 05 01 02 03", "truncated"},
		{"prefixes only", "f3 48", "truncated"},
		{"popcnt without f3 (jmpe)", "0f b8 c1", "without the f3"},
		{"popcnt with f2", "f2 0f b8 c1", "without the f3"},
		{"popcnt with f2 and f3", "f2 f3 0f b8 c1", "f2"},
		{"lock popcnt", "f0 f3 0f b8 c1", "lock"},
		{"lock int3", "f0 cc", "lock"},
		{"REX before a legacy prefix", "48 f3 0f b8 c1", "REX"},
		{"two REX prefixes", "48 48 0f b8 c1", "REX"},
		{"eretu is not clac", "f3 0f 01 ca", "prefix"},
		{"erets is not clac", "f2 0f 01 ca", "prefix"},
		{"66 stac", "66 0f 01 cb", "prefix"},
		{"16 bytes long", "66 66 66 66 66 66 66 66 66 66 66 f3 0f b8 80 00 00 00 00", "longer than 15"},
		{"15 prefixes", "66 66 66 66 66 66 66 66 66 66 66 66 66 66 66", "longer than 15"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			insn := h(c.insn)
			if _, _, err := Decode(insn); err == nil {
				t.Fatal("Decode accepted it")
			}
			r := baseRegs()
			r.RIP = 0xffffffff81234567
			_, err := Apply(insn, r, nil)
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("Apply error = %v (%T), want *UnsupportedError", err, err)
			}
			if !strings.Contains(ue.Reason, c.reason) {
				t.Errorf("reason %q does not mention %q", ue.Reason, c.reason)
			}
			wantBytes := insn[:min(len(insn), MaxInsnLen)]
			if string(ue.Bytes) != string(wantBytes) {
				t.Errorf("Bytes = % x, want % x", ue.Bytes, wantBytes)
			}
			prefix := "cannot emulate instruction at RIP 0xffffffff81234567: bytes"
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message %q does not start with %q", err, prefix)
			}
		})
	}
}

func TestUnsupportedMessage(t *testing.T) {
	_, err := Apply(h("0f ae 20"), Regs{RIP: 0x1234}, nil)
	want := "cannot emulate instruction at RIP 0x1234: bytes 0f ae 20 ("
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want prefix %q", err, want)
	}
	_, _, err = Decode(h("cd 03"))
	if err == nil || !strings.HasPrefix(err.Error(), "cannot emulate instruction: bytes cd 03 (") {
		t.Fatalf("Decode error %q", err)
	}
	// The error keeps its own copy of the bytes.
	insn := h("0f 0b")
	_, err = Apply(insn, Regs{}, nil)
	insn[0] = 0
	var ue *UnsupportedError
	if !errors.As(err, &ue) || ue.Bytes[0] != 0x0f {
		t.Fatalf("error bytes alias the input: %v", err)
	}
}

func TestMemoryErrors(t *testing.T) {
	r := baseRegs()
	r.GPR[RAX] = 0x2000
	// No reader for a memory operand: an error, not a panic.
	if _, err := Apply(h("f3 0f b8 08"), r, nil); err == nil || !strings.Contains(err.Error(), "no guest memory reader") {
		t.Fatalf("nil Memory: %v", err)
	}
	// A failing read is wrapped.
	m := &oneOperand{addr: 0x3000}
	_, err := Apply(h("f3 0f b8 08"), r, m)
	if !errors.Is(err, ErrNotMapped) || !strings.Contains(err.Error(), "0x2000") {
		t.Fatalf("unmapped operand: %v", err)
	}
	var ue *UnsupportedError
	if errors.As(err, &ue) {
		t.Fatal("a memory error must not look like an unsupported instruction")
	}
}

func TestRegsKVMRoundTrip(t *testing.T) {
	k := kvm.Regs{
		RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RSP: 7, RBP: 8,
		R8: 9, R9: 10, R10: 11, R11: 12, R12: 13, R13: 14, R14: 15, R15: 16,
		RIP: 17, RFLAGS: 18,
	}
	var s kvm.Sregs
	s.EFER = 0x500
	s.CS.L = 1
	s.FS.Base, s.GS.Base = 0xf5, 0x65
	r, err := RegsFromKVM(k, s)
	if err != nil {
		t.Fatal(err)
	}
	want := [16]uint64{RAX: 1, RCX: 3, RDX: 4, RBX: 2, RSP: 7, RBP: 8, RSI: 5, RDI: 6, R8: 9, R9: 10, R10: 11, R11: 12, R12: 13, R13: 14, R14: 15, R15: 16}
	if r.GPR != want || r.RIP != 17 || r.RFLAGS != 18 || r.FSBase != 0xf5 || r.GSBase != 0x65 {
		t.Fatalf("RegsFromKVM = %+v", r)
	}
	if back := r.KVM(); back != k {
		t.Fatalf("KVM() = %+v, want %+v", back, k)
	}
	// popcnt %rbx,%rsi goes to the right kvm.Regs fields.
	k.RBX = 0xff
	r, _ = RegsFromKVM(k, s)
	r.RIP = 0x1000
	a, err := Apply(h("f3 48 0f b8 f3"), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.NewRegs.KVM(); got.RSI != 8 || got.RBX != 0xff {
		t.Fatalf("popcnt %%rbx,%%rsi: RSI %d RBX %#x", got.RSI, got.RBX)
	}

	for _, bad := range []struct {
		efer uint64
		l    uint8
	}{{0x500, 0}, {0x100, 1}, {0, 0}} {
		s.EFER, s.CS.L = bad.efer, bad.l
		if _, err := RegsFromKVM(k, s); err == nil {
			t.Errorf("RegsFromKVM accepted EFER %#x CS.L %d", bad.efer, bad.l)
		}
	}
}

func TestBreakpointEvents(t *testing.T) {
	var ev kvm.VCPUEvents
	ev.Exception.HasErrorCode = 1
	ev.Exception.ErrorCode = 7
	ev.Interrupt.Injected, ev.Interrupt.Nr = 1, 0x20
	ev.Flags = 0xff
	got := BreakpointEvents(ev)
	if got.Exception.Injected != 1 || got.Exception.Nr != 3 || got.Exception.HasErrorCode != 0 || got.Exception.ErrorCode != 0 || got.Flags != 0 {
		t.Fatalf("BreakpointEvents = %+v", got.Exception)
	}
	if got.Interrupt != ev.Interrupt {
		t.Fatal("BreakpointEvents changed the pending interrupt")
	}
}

func TestKindString(t *testing.T) {
	want := map[Kind]string{KindInt3: "int3", KindCLAC: "clac", KindSTAC: "stac", KindPOPCNT: "popcnt", KindUnknown: "unknown(0)"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(k), k.String(), s)
		}
	}
}

func TestCounters(t *testing.T) {
	var c Counters
	if got := c.String(); got != "int3=0 clac=0 stac=0 popcnt=0" {
		t.Fatalf("zero Counters = %q", got)
	}
	adds := map[Kind]int{KindInt3: 12, KindCLAC: 400, KindSTAC: 400, KindPOPCNT: 3}
	var wg sync.WaitGroup
	for k, n := range adds {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					c.Add(k)
				}
			}()
		}
	}
	wg.Wait()
	c.Add(KindUnknown)
	c.Add(Kind(99))
	c.Add(Kind(-1))
	if got, want := c.String(), "int3=48 clac=1600 stac=1600 popcnt=12"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if c.Total() != 48+1600+1600+12 || c.Count(Kind(99)) != 0 {
		t.Fatalf("Total %d", c.Total())
	}
}
