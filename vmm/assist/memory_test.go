package assist

import (
	"errors"
	"fmt"
	"testing"
)

// pagedGuest is guest RAM plus a page table mapping linear pages to
// physical pages (not contiguously, so page crossing is visible).
type pagedGuest struct {
	ram    []byte
	pages  map[uint64]uint64 // linear page -> physical page
	failAt uint64            // linear page whose translation errors (0: none)
	xlates int
}

var errTranslate = errors.New("translate failed")

func (g *pagedGuest) translate(linear uint64) (uint64, bool, error) {
	g.xlates++
	page := linear &^ (pageSize - 1)
	if g.failAt != 0 && page == g.failAt {
		return 0, false, errTranslate
	}
	p, ok := g.pages[page]
	if !ok {
		return 0, false, nil
	}
	return p | linear&(pageSize-1), true, nil
}

func (g *pagedGuest) readPhys(phys uint64, p []byte) error {
	if phys > uint64(len(g.ram)) || uint64(len(p)) > uint64(len(g.ram))-phys {
		return fmt.Errorf("physical %#x+%d outside RAM", phys, len(p))
	}
	copy(p, g.ram[phys:])
	return nil
}

func newPagedGuest() *pagedGuest {
	g := &pagedGuest{ram: make([]byte, 4*pageSize), pages: map[uint64]uint64{
		0x7000: 0x2000, // linear 0x7000 -> physical 0x2000
		0x8000: 0x0000, // linear 0x8000 -> physical 0x0000 (before it)
	}}
	for i := range g.ram {
		g.ram[i] = byte(i/pageSize)<<6 | byte(i%61)
	}
	return g
}

func TestLinearMemoryCrossesPages(t *testing.T) {
	g := newPagedGuest()
	m := LinearMemory{Translate: g.translate, ReadPhys: g.readPhys}
	p := make([]byte, 8)
	if err := m.ReadLinear(0x7ffc, p); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), g.ram[0x2ffc:0x3000]...), g.ram[0:4]...)
	if string(p) != string(want) {
		t.Fatalf("read % x, want % x", p, want)
	}
	if g.xlates != 2 {
		t.Fatalf("%d translations, want 2", g.xlates)
	}
	// Unmapped page after the mapped ones.
	if err := m.ReadLinear(0x8ffe, p[:4]); !errors.Is(err, ErrNotMapped) {
		t.Fatalf("read into unmapped page: %v", err)
	}
	g.failAt = 0x7000
	if err := m.ReadLinear(0x7000, p); !errors.Is(err, errTranslate) {
		t.Fatalf("translate error not wrapped: %v", err)
	}
	// Physical address outside RAM.
	g.failAt = 0
	g.pages[0x9000] = 0x100000
	if err := m.ReadLinear(0x9000, p); err == nil {
		t.Fatal("read outside RAM succeeded")
	}
}

func TestFetchInstruction(t *testing.T) {
	g := newPagedGuest()
	m := LinearMemory{Translate: g.translate, ReadPhys: g.readPhys}
	// Fully inside a page.
	b, err := FetchInstruction(m, 0x7100)
	if err != nil || len(b) != MaxInsnLen || string(b) != string(g.ram[0x2100:0x2100+MaxInsnLen]) {
		t.Fatalf("fetch in page: % x, %v", b, err)
	}
	// Crossing into a mapped page.
	b, err = FetchInstruction(m, 0x7ff8)
	if err != nil || len(b) != MaxInsnLen {
		t.Fatalf("fetch across pages: % x, %v", b, err)
	}
	// Crossing into an unmapped page: only the bytes up to the boundary.
	b, err = FetchInstruction(m, 0x8ffd)
	if err != nil || len(b) != 3 || string(b) != string(g.ram[0xffd:0x1000]) {
		t.Fatalf("fetch at end of mapping: % x, %v", b, err)
	}
	// RIP itself unmapped.
	if _, err := FetchInstruction(m, 0x5000); !errors.Is(err, ErrNotMapped) {
		t.Fatalf("fetch at unmapped RIP: %v", err)
	}
	// A popcnt cut by the end of the mapping is reported as truncated.
	copy(g.ram[0xffd:], []byte{0xf3, 0x0f, 0xb8})
	b, _ = FetchInstruction(m, 0x8ffd)
	var ue *UnsupportedError
	if _, err := Apply(b, Regs{RIP: 0x8ffd}, m); !errors.As(err, &ue) {
		t.Fatalf("Apply on cut instruction: %v", err)
	}
}
