package assist

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// MaxInsnLen is the architectural limit on an x86 instruction's length;
// the VMM fetches this many bytes at RIP (fewer at the end of mapped
// memory).
const MaxInsnLen = 15

// Kind names an instruction the assists complete.
type Kind int

// The instructions KVM's emulator rejects at CPL0 on emulating hosts.
const (
	KindUnknown Kind = iota
	KindInt3         // cc: breakpoint trap
	KindCLAC         // 0f 01 ca: clear RFLAGS.AC
	KindSTAC         // 0f 01 cb: set RFLAGS.AC
	KindPOPCNT       // f3 [rex] 0f b8 /r: population count
	numKinds
)

// Kinds lists every instruction kind the package completes, in order.
func Kinds() []Kind { return []Kind{KindInt3, KindCLAC, KindSTAC, KindPOPCNT} }

func (k Kind) String() string {
	switch k {
	case KindInt3:
		return "int3"
	case KindCLAC:
		return "clac"
	case KindSTAC:
		return "stac"
	case KindPOPCNT:
		return "popcnt"
	}
	return fmt.Sprintf("unknown(%d)", int(k))
}

// UnsupportedError reports instruction bytes the assists do not complete:
// another instruction, a form of a known one that is invalid or not
// implemented, or bytes that end before the instruction does.
type UnsupportedError struct {
	// RIP is where the bytes were fetched (valid when HaveRIP is true:
	// Decode does not know it, Apply does).
	RIP     uint64
	HaveRIP bool
	// Bytes are the instruction bytes examined (at most MaxInsnLen).
	Bytes []byte
	// Reason says what was wrong with them.
	Reason string
}

func (e *UnsupportedError) Error() string {
	var b strings.Builder
	b.WriteString("cannot emulate instruction")
	if e.HaveRIP {
		fmt.Fprintf(&b, " at RIP %#x", e.RIP)
	}
	b.WriteString(": bytes")
	if len(e.Bytes) == 0 {
		b.WriteString(" (none)")
	}
	for _, c := range e.Bytes {
		fmt.Fprintf(&b, " %02x", c)
	}
	if e.Reason != "" {
		b.WriteString(" (")
		b.WriteString(e.Reason)
		b.WriteString(")")
	}
	return b.String()
}

func unsupported(insn []byte, format string, args ...any) *UnsupportedError {
	n := min(len(insn), MaxInsnLen)
	return &UnsupportedError{Bytes: append([]byte(nil), insn[:n]...), Reason: fmt.Sprintf(format, args...)}
}

// noReg marks an absent base or index register.
const noReg = -1

// decoded is one decoded instruction.
type decoded struct {
	kind   Kind
	length int

	// popcnt only.
	opSize  int  // operand size in bytes: 2, 4 or 8
	addr32  bool // 0x67: 32-bit effective address
	seg     byte // 0, or the FS (0x64) / GS (0x65) override
	reg     int  // destination register
	regForm bool // source is register rm (ModRM.mod == 3)
	rm      int
	base    int // base register or noReg
	index   int // index register or noReg
	scale   uint
	disp    int64
	ripRel  bool
}

// REX bits.
const (
	rexB = 1 << 0
	rexX = 1 << 1
	rexR = 1 << 2
	rexW = 1 << 3
)

func isLegacyPrefix(b byte) bool {
	switch b {
	case 0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65:
		return true
	}
	return false
}

// decode decodes one 64-bit-mode instruction from the start of p.
func decode(p []byte) (decoded, error) {
	var (
		d                            decoded
		opsize16, rep, repne, locked bool
		rex                          byte
		i                            int
	)
	if len(p) > MaxInsnLen {
		p = p[:MaxInsnLen]
	}
	// Legacy prefixes, in any order, then at most one REX just before the
	// opcode.
prefixes:
	for ; i < len(p); i++ {
		switch b := p[i]; {
		case b == 0x66:
			opsize16 = true
		case b == 0x67:
			d.addr32 = true
		case b == 0xf0:
			locked = true
		case b == 0xf2:
			repne = true
		case b == 0xf3:
			rep = true
		case b == 0x64 || b == 0x65:
			d.seg = b
		case b == 0x26 || b == 0x2e || b == 0x36 || b == 0x3e:
			// ES, CS, SS, DS: base 0 in 64-bit mode; a later one
			// cancels an earlier FS/GS (the last override wins).
			d.seg = 0
		case b&0xf0 == 0x40:
			rex = b
			i++
			if i < len(p) && (isLegacyPrefix(p[i]) || p[i]&0xf0 == 0x40) {
				return d, unsupported(p, "REX prefix is not the last prefix before the opcode")
			}
			break prefixes
		default:
			break prefixes
		}
	}
	need := func(n int) error {
		if n > MaxInsnLen {
			return unsupported(p, "instruction longer than %d bytes", MaxInsnLen)
		}
		if n > len(p) {
			return unsupported(p, "truncated: instruction needs at least %d bytes, have %d", n, len(p))
		}
		return nil
	}
	if err := need(i + 1); err != nil {
		return d, err
	}
	if locked {
		return d, unsupported(p, "lock prefix")
	}
	switch p[i] {
	case 0xcc:
		d.kind, d.length = KindInt3, i+1
		return d, nil
	case 0x0f:
	default:
		return d, unsupported(p, "opcode %02x is not int3, clac, stac or popcnt", p[i])
	}
	if err := need(i + 2); err != nil {
		return d, err
	}
	switch p[i+1] {
	case 0x01:
		if err := need(i + 3); err != nil {
			return d, err
		}
		switch p[i+2] {
		case 0xca:
			d.kind = KindCLAC
		case 0xcb:
			d.kind = KindSTAC
		default:
			return d, unsupported(p, "opcode 0f 01 %02x is not clac or stac", p[i+2])
		}
		// clac/stac take no 66/f2/f3 prefix (f2/f3 0f 01 ca are other
		// instructions).
		if opsize16 || rep || repne {
			return d, unsupported(p, "%v with a 66, f2 or f3 prefix", d.kind)
		}
		d.length = i + 3
		return d, nil
	case 0xb8:
		if !rep || repne {
			return d, unsupported(p, "0f b8 without the f3 prefix of popcnt (or with f2)")
		}
		d.kind = KindPOPCNT
		return decodePopcnt(p, i+2, rex, opsize16, d, need)
	}
	return d, unsupported(p, "opcode 0f %02x is not clac, stac or popcnt", p[i+1])
}

// decodePopcnt decodes the ModRM operand of popcnt starting at p[at].
func decodePopcnt(p []byte, at int, rex byte, opsize16 bool, d decoded, need func(int) error) (decoded, error) {
	switch {
	case rex&rexW != 0:
		d.opSize = 8
	case opsize16:
		d.opSize = 2
	default:
		d.opSize = 4
	}
	if err := need(at + 1); err != nil {
		return d, err
	}
	modrm := p[at]
	at++
	mod, rmLow := modrm>>6, int(modrm&7)
	d.reg = int(modrm>>3&7) | rexBit(rex, rexR)
	d.base, d.index = noReg, noReg
	if mod == 3 {
		d.regForm = true
		d.rm = rmLow | rexBit(rex, rexB)
		d.length = at
		return d, nil
	}
	dispSize := 0
	switch {
	case rmLow == 4: // SIB follows
		if err := need(at + 1); err != nil {
			return d, err
		}
		sib := p[at]
		at++
		d.scale = uint(sib >> 6)
		if idx := int(sib>>3&7) | rexBit(rex, rexX); idx != RSP {
			d.index = idx
		}
		if baseLow := int(sib & 7); baseLow == 5 && mod == 0 {
			dispSize = 4 // no base, disp32
		} else {
			d.base = baseLow | rexBit(rex, rexB)
		}
	case rmLow == 5 && mod == 0:
		d.ripRel = true
		dispSize = 4
	default:
		d.base = rmLow | rexBit(rex, rexB)
	}
	switch mod {
	case 1:
		dispSize = 1
	case 2:
		dispSize = 4
	}
	if err := need(at + dispSize); err != nil {
		return d, err
	}
	switch dispSize {
	case 1:
		d.disp = int64(int8(p[at]))
	case 4:
		d.disp = int64(int32(binary.LittleEndian.Uint32(p[at:])))
	}
	d.length = at + dispSize
	return d, nil
}

func rexBit(rex, bit byte) int {
	if rex&bit != 0 {
		return 8
	}
	return 0
}

// Decode identifies the instruction at the start of insn (the bytes at
// RIP, up to MaxInsnLen of them) and returns its kind and length. Anything
// but a supported instruction yields an *UnsupportedError.
func Decode(insn []byte) (Kind, int, error) {
	d, err := decode(insn)
	if err != nil {
		return KindUnknown, 0, err
	}
	return d.kind, d.length, nil
}
