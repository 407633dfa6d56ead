package boot

import (
	"reflect"
	"slices"
	"testing"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

func TestRAMRegions(t *testing.T) {
	tests := []struct {
		mem  uint64
		want []Region
	}{
		{0, nil},
		{128 * mib, []Region{{0, 128 * mib}}},
		{3 * gib, []Region{{0, 3 * gib}}},
		{3*gib + 4096, []Region{{0, 3 * gib}, {4 * gib, 4096}}},
		{4 * gib, []Region{{0, 3 * gib}, {4 * gib, 1 * gib}}},
		{6 * gib, []Region{{0, 3 * gib}, {4 * gib, 3 * gib}}},
	}
	for _, tt := range tests {
		got := RAMRegions(tt.mem)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("RAMRegions(%#x) = %v, want %v", tt.mem, got, tt.want)
		}
		var total uint64
		for _, r := range got {
			total += r.Size
			if r.GPA < MMIOGapEnd && r.End() > MMIOGapStart {
				t.Errorf("RAMRegions(%#x): region %v overlaps the MMIO gap", tt.mem, r)
			}
		}
		if total != tt.mem {
			t.Errorf("RAMRegions(%#x) totals %#x bytes", tt.mem, total)
		}
	}
}

func TestE820(t *testing.T) {
	const ebda = 0x9FC00
	reserved := E820Entry{ebda, 1*mib - ebda, 2}
	tests := []struct {
		name string
		mem  uint64
		want []E820Entry
	}{
		{"128M", 128 * mib, []E820Entry{{0, ebda, 1}, reserved, {1 * mib, 127 * mib, 1}}},
		{"3G exactly at the gap", 3 * gib, []E820Entry{{0, ebda, 1}, reserved, {1 * mib, 3*gib - 1*mib, 1}}},
		{"4G", 4 * gib, []E820Entry{{0, ebda, 1}, reserved, {1 * mib, 3*gib - 1*mib, 1}, {4 * gib, 1 * gib, 1}}},
		{"6G", 6 * gib, []E820Entry{{0, ebda, 1}, reserved, {1 * mib, 3*gib - 1*mib, 1}, {4 * gib, 3 * gib, 1}}},
		{"512K", 512 * kib, []E820Entry{{0, 512 * kib, 1}, reserved}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := E820(tt.mem)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("E820(%#x) =\n%v\nwant\n%v", tt.mem, got, tt.want)
			}
			// Usable RAM adds up to the memory size minus the EBDA/BIOS hole.
			var usable uint64
			for _, e := range got {
				if e.Type == E820RAM {
					usable += e.Size
				}
			}
			if hole := min(tt.mem, 1*mib) - min(tt.mem, ebda); usable != tt.mem-hole {
				t.Errorf("usable RAM %#x, want %#x", usable, tt.mem-hole)
			}
			// Sorted and disjoint, as Linux expects from a BIOS.
			for i := 1; i < len(got); i++ {
				if got[i].Addr < got[i-1].Addr+got[i-1].Size {
					t.Errorf("entries %d and %d overlap or are out of order", i-1, i)
				}
			}
		})
	}
}

// TestLayoutDisjoint checks that the fixed boot structures do not overlap
// one another, the reserved areas or high memory.
func TestLayoutDisjoint(t *testing.T) {
	areas := []span{
		{GDTAddr, GDTAddr + GDTSize, "GDT"},
		{IDTAddr, IDTAddr + 16, "IDT"},
		{BootTSSAddr, BootTSSAddr + BootTSSSize, "TSS"},
		{0x1000, BootStackTop, "stack"},
		{ZeroPageAddr, ZeroPageAddr + ZeroPageSize, "zero page"},
		{PML4Addr, PML4Addr + 4096, "PML4"},
		{PDPTAddr, PDPTAddr + 4096, "PDPT"},
		{PDAddr, PDAddr + PDCount*4096, "PDs"},
		{CmdlineAddr, CmdlineAddr + CmdlineAreaSize, "cmdline"},
		{MPTableAddr, MPTableAddr + 16, "MP floating pointer"},
		{MPConfigAddr, MPConfigAddr + uint64(mpConfigSize(MaxCPUs)), "MP config table"},
	}
	slices.SortFunc(areas, func(a, b span) int { return int(a.start) - int(b.start) })
	for i := 1; i < len(areas); i++ {
		if areas[i].start < areas[i-1].end {
			t.Errorf("%s [%#x, %#x) overlaps %s [%#x, %#x)", areas[i-1].what, areas[i-1].start, areas[i-1].end,
				areas[i].what, areas[i].start, areas[i].end)
		}
	}
	for _, a := range areas {
		if a.end > HighMemStart {
			t.Errorf("%s ends at %#x, above 1 MiB", a.what, a.end)
		}
		// Everything but the MP table must be in usable RAM; the MP table
		// must be in the reserved area.
		inReserved := a.start >= EBDAStart
		if isMP := a.start == MPTableAddr || a.start == MPConfigAddr; isMP != inReserved {
			t.Errorf("%s at %#x: in e820-reserved area = %v", a.what, a.start, inReserved)
		}
	}
	if PDCount*512*2*mib != 4*gib {
		t.Errorf("%d page directories do not map 4 GiB", PDCount)
	}
	if BootStructEnd < PDAddr+PDCount*4096 {
		t.Errorf("BootStructEnd %#x is inside the page directories", BootStructEnd)
	}
	// The KVM private pages and the devices sit in the MMIO gap, disjoint.
	gap := []span{
		{VirtioMMIOBase, VirtioMMIOAddr(MaxVirtioDevices), "virtio"},
		{IOAPICAddr, IOAPICAddr + 4096, "IOAPIC"},
		{LAPICAddr, LAPICAddr + 4096, "LAPIC"},
		{IdentityMapAddr, IdentityMapAddr + 4096, "identity map"},
		{TSSAddr, TSSAddr + 3*4096, "KVM TSS"},
	}
	for i, a := range gap {
		if a.start < MMIOGapStart || a.end > MMIOGapEnd {
			t.Errorf("%s [%#x, %#x) is outside the MMIO gap", a.what, a.start, a.end)
		}
		if i > 0 && a.start < gap[i-1].end {
			t.Errorf("%s overlaps %s", a.what, gap[i-1].what)
		}
	}
}

func TestVirtioSlots(t *testing.T) {
	if got := VirtioMMIOAddr(2); got != 0xD000_2000 {
		t.Errorf("VirtioMMIOAddr(2) = %#x", got)
	}
	if got := VirtioIRQ(0); got != 5 {
		t.Errorf("VirtioIRQ(0) = %d", got)
	}
	if last := VirtioIRQ(MaxVirtioDevices - 1); last != IOAPICPins-1 {
		t.Errorf("last virtio IRQ %d, want %d", last, IOAPICPins-1)
	}
}
