package assist

import (
	"errors"
	"fmt"
)

// pageSize is the translation granule: a read never assumes that two
// 4 KiB pages adjacent in linear memory are adjacent in guest RAM.
const pageSize = 4096

// ErrNotMapped is returned (wrapped) when a linear address has no
// translation in the guest's page tables.
var ErrNotMapped = errors.New("linear address not mapped")

// LinearMemory implements Memory on top of a page-table walk and a
// guest-physical reader. Translate is typically (*kvm.VCPU).Translate;
// ReadPhys copies guest RAM at a guest-physical address and must fail
// (not panic) outside RAM.
type LinearMemory struct {
	Translate func(linear uint64) (phys uint64, ok bool, err error)
	ReadPhys  func(phys uint64, p []byte) error
}

// ReadLinear fills p from linear address addr, translating each 4 KiB
// page separately.
func (m LinearMemory) ReadLinear(addr uint64, p []byte) error {
	for len(p) > 0 {
		n := min(uint64(len(p)), pageSize-addr%pageSize)
		phys, ok, err := m.Translate(addr)
		if err != nil {
			return fmt.Errorf("translate linear address %#x: %w", addr, err)
		}
		if !ok {
			return fmt.Errorf("read linear address %#x: %w", addr, ErrNotMapped)
		}
		if err := m.ReadPhys(phys, p[:n]); err != nil {
			return fmt.Errorf("read linear address %#x (physical %#x): %w", addr, phys, err)
		}
		p = p[n:]
		addr += n
	}
	return nil
}

// FetchInstruction reads the bytes at rip for Decode or Apply: up to
// MaxInsnLen of them, fewer when the instruction could run into a page
// that is not readable (an instruction that really continues there is
// then reported as truncated). Failing to read the first byte is an error.
func FetchInstruction(mem Memory, rip uint64) ([]byte, error) {
	buf := make([]byte, MaxInsnLen)
	first := min(uint64(MaxInsnLen), pageSize-rip%pageSize)
	if err := mem.ReadLinear(rip, buf[:first]); err != nil {
		return nil, fmt.Errorf("fetch instruction at RIP %#x: %w", rip, err)
	}
	if first == MaxInsnLen {
		return buf, nil
	}
	if err := mem.ReadLinear(rip+first, buf[first:]); err != nil {
		return buf[:first], nil
	}
	return buf, nil
}
