package assist

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"testing"
)

// hashMem is guest memory whose every byte is a hash of its address, and
// where every address below 0x1000 is unmapped.
type hashMem struct {
	reads []struct {
		addr uint64
		n    int
	}
}

func (m *hashMem) ReadLinear(addr uint64, p []byte) error {
	m.reads = append(m.reads, struct {
		addr uint64
		n    int
	}{addr, len(p)})
	if addr < 0x1000 {
		return ErrNotMapped
	}
	for i := range p {
		p[i] = hashByte(addr + uint64(i))
	}
	return nil
}

func hashByte(a uint64) byte {
	a ^= a >> 33
	a *= 0xff51afd7ed558ccd
	a ^= a >> 29
	return byte(a)
}

// splitmix derives register values from a seed.
func splitmix(s *uint64) uint64 {
	*s += 0x9e3779b97f4a7c15
	z := *s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// independentPopcnt finds the operand size, destination and (for register
// forms) source of a popcnt Apply accepted, by a decoder separate from the
// package's: the opcode 0f b8 follows the prefixes, REX immediately before.
func independentPopcnt(insn []byte) (size, dst, src int, regForm bool) {
	j := 0
	for insn[j] != 0x0f {
		j++
	}
	var rex byte
	if j > 0 && insn[j-1]&0xf0 == 0x40 {
		rex = insn[j-1]
	}
	size = 4
	for _, b := range insn[:j] {
		if b == 0x66 {
			size = 2
		}
	}
	if rex&8 != 0 {
		size = 8
	}
	modrm := insn[j+2]
	dst = int(modrm>>3&7) | int(rex&4)<<1
	src = int(modrm&7) | int(rex&1)<<3
	return size, dst, src, modrm>>6 == 3
}

func FuzzApply(f *testing.F) {
	for _, s := range []string{
		"cc", "0f 01 ca", "0f 01 cb", "f3 0f b8 c1", "f3 48 0f b8 c1", "66 f3 0f b8 c1",
		"f3 4d 0f b8 d1", "f3 0f b8 08", "f3 48 0f b8 05 00 01 00 00", "f3 4f 0f b8 5c e0 08",
		"f3 0f b8 04 5d 00 10 00 00", "64 f3 48 0f b8 04 25 28 00 00 00", "67 f3 0f b8 4c 88 10",
		"66 f3 44 0f b8 44 6c f0", "0f ae 20", "48 0f c7 0f", "f3 0f b8", "48 f3 0f b8 c1", "",
	} {
		f.Add(h(s), uint64(kernelRIP), uint64(0x2|arithFlags), uint64(len(s)))
	}
	f.Fuzz(func(t *testing.T, insn []byte, rip, rflags, seed uint64) {
		var r Regs
		for i := range r.GPR {
			r.GPR[i] = splitmix(&seed)
		}
		r.RIP, r.RFLAGS = rip, rflags
		r.FSBase, r.GSBase = splitmix(&seed), splitmix(&seed)
		m := &hashMem{}
		a, err := Apply(insn, r, m)
		k, n, derr := Decode(insn)
		if err != nil {
			var ue *UnsupportedError
			if errors.As(err, &ue) {
				if derr == nil {
					t.Fatalf("Apply: %v, but Decode accepted % x", err, insn)
				}
				if len(ue.Bytes) > MaxInsnLen || !ue.HaveRIP || ue.RIP != rip {
					t.Fatalf("bad UnsupportedError %+v", ue)
				}
				return
			}
			// Otherwise it must be a memory error from a popcnt.
			if !errors.Is(err, ErrNotMapped) || k != KindPOPCNT {
				t.Fatalf("Apply(% x): unexpected error %v", insn, err)
			}
			return
		}
		if derr != nil || k != a.Kind || n != a.Length {
			t.Fatalf("Decode = %v %d %v, Apply = %v %d", k, n, derr, a.Kind, a.Length)
		}
		if a.Length < 1 || a.Length > MaxInsnLen || a.Length > len(insn) {
			t.Fatalf("length %d of % x", a.Length, insn)
		}
		if a.NewRegs.RIP != rip+uint64(a.Length) {
			t.Fatalf("RIP %#x, want %#x", a.NewRegs.RIP, rip+uint64(a.Length))
		}
		if a.InjectBP != (a.Kind == KindInt3) {
			t.Fatalf("InjectBP %v for %v", a.InjectBP, a.Kind)
		}
		want := r
		want.RIP = a.NewRegs.RIP
		switch a.Kind {
		case KindInt3:
		case KindCLAC:
			want.RFLAGS &^= FlagAC
		case KindSTAC:
			want.RFLAGS |= FlagAC
		case KindPOPCNT:
			size, dst, srcReg, regForm := independentPopcnt(insn[:a.Length])
			var src uint64
			if regForm {
				if len(m.reads) != 0 {
					t.Fatalf("register form read memory")
				}
				src = r.GPR[srcReg]
			} else {
				if len(m.reads) != 1 || m.reads[0].n != size {
					t.Fatalf("memory reads %+v, want one of %d bytes", m.reads, size)
				}
				var buf [8]byte
				for i := range size {
					buf[i] = hashByte(m.reads[0].addr + uint64(i))
				}
				src = binary.LittleEndian.Uint64(buf[:])
			}
			if size < 8 {
				src &= 1<<(8*size) - 1
			}
			cnt := uint64(bits.OnesCount64(src))
			switch size {
			case 2:
				want.GPR[dst] = want.GPR[dst]&^0xffff | cnt
			default:
				want.GPR[dst] = cnt
			}
			want.RFLAGS &^= arithFlags
			if src == 0 {
				want.RFLAGS |= FlagZF
			}
		default:
			t.Fatalf("kind %v", a.Kind)
		}
		if a.NewRegs != want {
			t.Fatalf("Apply(% x) regs\n got %+v\nwant %+v", insn, a.NewRegs, want)
		}
	})
}
