package boot

import (
	"errors"
	"testing"
)

// mpTable is what a test-side parser (following the MP specification 1.4)
// finds in guest memory.
type mpTable struct {
	cpus      []mpCPU
	buses     []string
	ioapics   []mpIOAPIC
	ioInts    []mpInt
	localInts []mpInt
	lapic     uint32
}

type mpCPU struct{ apicID, flags uint8 }
type mpIOAPIC struct {
	id, version, flags uint8
	addr               uint32
}
type mpInt struct{ typ, bus, busIRQ, dstID, dstPin uint8 }

func sum8(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}

// parseMP scans [0x9fc00, 0xa0000) on 16-byte boundaries the way Linux
// does, then decodes the configuration table the pointer names.
func parseMP(t *testing.T, mem []byte) mpTable {
	t.Helper()
	fp := -1
	for a := 0x9FC00; a < 0xA0000; a += 16 {
		if string(mem[a:a+4]) == "_MP_" && mem[a+8] == 1 && sum8(mem[a:a+16]) == 0 && (mem[a+9] == 1 || mem[a+9] == 4) {
			fp = a
			break
		}
	}
	if fp < 0 {
		t.Fatal("no valid MP floating pointer in the last KiB of base memory")
	}
	if mem[fp+11] != 0 {
		t.Fatalf("MP feature byte 1 = %d: default configuration instead of a table", mem[fp+11])
	}
	phys := int(le.Uint32(mem[fp+4:]))
	if phys == 0 || phys+44 > len(mem) {
		t.Fatalf("MP config table pointer %#x", phys)
	}
	h := mem[phys:]
	if string(h[:4]) != "PCMP" {
		t.Fatalf("config table signature %q", h[:4])
	}
	length := int(le.Uint16(h[4:]))
	if sum8(h[:length]) != 0 {
		t.Fatal("config table checksum does not sum to zero")
	}
	if h[6] != 4 {
		t.Errorf("config table spec revision %d", h[6])
	}
	var tab mpTable
	tab.lapic = le.Uint32(h[36:])
	count := int(le.Uint16(h[34:]))
	p := 44
	for i := range count {
		if p >= length {
			t.Fatalf("entry %d at %d past the table length %d", i, p, length)
		}
		e := h[p:]
		switch e[0] {
		case 0:
			tab.cpus = append(tab.cpus, mpCPU{e[1], e[3]})
			if e[2] == 0 {
				t.Errorf("CPU %d has APIC version 0", e[1])
			}
			p += 20
		case 1:
			tab.buses = append(tab.buses, string(e[2:8]))
			p += 8
		case 2:
			tab.ioapics = append(tab.ioapics, mpIOAPIC{e[1], e[2], e[3], le.Uint32(e[4:])})
			p += 8
		case 3:
			tab.ioInts = append(tab.ioInts, mpInt{e[1], e[4], e[5], e[6], e[7]})
			p += 8
		case 4:
			tab.localInts = append(tab.localInts, mpInt{e[1], e[4], e[5], e[6], e[7]})
			p += 8
		default:
			t.Fatalf("unknown entry type %d at %d", e[0], p)
		}
	}
	if p != length {
		t.Fatalf("%d entries end at %d, table length %d", count, p, length)
	}
	return tab
}

// checkMPTable checks everything Linux needs from the table for cpus CPUs.
func checkMPTable(t *testing.T, mem []byte, cpus int) {
	t.Helper()
	tab := parseMP(t, mem)
	if tab.lapic != 0xFEE00000 {
		t.Errorf("local APIC address %#x", tab.lapic)
	}
	if len(tab.cpus) != cpus {
		t.Fatalf("%d processor entries, want %d", len(tab.cpus), cpus)
	}
	for i, c := range tab.cpus {
		wantFlags := uint8(1)
		if i == 0 {
			wantFlags = 3
		}
		if int(c.apicID) != i || c.flags != wantFlags {
			t.Errorf("processor %d: APIC ID %d flags %#x, want %d %#x", i, c.apicID, c.flags, i, wantFlags)
		}
	}
	if len(tab.buses) != 1 || tab.buses[0] != "ISA   " {
		t.Errorf("buses %q, want one ISA bus", tab.buses)
	}
	if len(tab.ioapics) != 1 {
		t.Fatalf("%d IOAPIC entries", len(tab.ioapics))
	}
	io := tab.ioapics[0]
	if int(io.id) != cpus || io.version != 0x11 || io.flags&1 == 0 || io.addr != 0xFEC00000 {
		t.Errorf("IOAPIC entry %+v", io)
	}
	// Every IRQ 0-15 and every virtio GSI up to 23 reaches the IOAPIC pin
	// of the same number.
	routed := map[uint8]bool{}
	for _, in := range tab.ioInts {
		if in.typ != 0 || in.bus != 0 || in.dstID != io.id || in.dstPin != in.busIRQ {
			t.Errorf("I/O interrupt entry %+v", in)
		}
		routed[in.busIRQ] = true
	}
	for irq := range uint8(24) {
		if !routed[irq] {
			t.Errorf("IRQ %d not routed through the IOAPIC", irq)
		}
	}
	if len(tab.ioInts) != 24 {
		t.Errorf("%d I/O interrupt entries, want 24", len(tab.ioInts))
	}
	want := []mpInt{{3, 0, 0, 0xFF, 0}, {1, 0, 0, 0xFF, 1}} // ExtINT on LINT0, NMI on LINT1
	if len(tab.localInts) != 2 || tab.localInts[0] != want[0] || tab.localInts[1] != want[1] {
		t.Errorf("local interrupt entries %+v, want %+v", tab.localInts, want)
	}
}

func TestWriteMPTable(t *testing.T) {
	for _, cpus := range []int{1, 2, 8, MaxCPUs} {
		mem := newMem(1 * mib)
		if err := WriteMPTable(mem, cpus); err != nil {
			t.Fatalf("WriteMPTable(%d): %v", cpus, err)
		}
		checkMPTable(t, mem, cpus)
		// Nothing outside the two structures changed.
		size := 44 + 20*cpus + 8*(2+24+2)
		if !allBytes(mem[:0x9FC00], poison) || !allBytes(mem[0x9FC10:0xF0000], poison) || !allBytes(mem[0xF0000+size:], poison) {
			t.Errorf("WriteMPTable(%d) wrote outside its structures", cpus)
		}
		// Rewriting with fewer CPUs leaves a valid table.
		if err := WriteMPTable(mem, 1); err != nil {
			t.Fatal(err)
		}
		checkMPTable(t, mem, 1)
	}
}

func TestWriteMPTableErrors(t *testing.T) {
	tests := []struct {
		name string
		mem  int
		cpus int
		want error
	}{
		{"zero CPUs", 1 * mib, 0, nil},
		{"255 CPUs", 1 * mib, 255, nil},
		{"memory ends before the config table", 0xF0000 + 100, 8, ErrNoFit},
		{"memory ends before the EBDA", 0x9000, 1, ErrNoFit},
	}
	for _, tt := range tests {
		mem := newMem(uint64(tt.mem))
		err := WriteMPTable(mem, tt.cpus)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: WriteMPTable = %v, want error %v", tt.name, err, tt.want)
		}
		if !allBytes(mem, poison) {
			t.Errorf("%s: failed WriteMPTable modified memory", tt.name)
		}
	}
}
