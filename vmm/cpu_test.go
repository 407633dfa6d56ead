package vmm

import (
	"testing"

	"github.com/govmm/govmm/kvm"
)

func TestGuestCPUIDTopology(t *testing.T) {
	supported := []kvm.CPUIDEntry{
		{Function: 0, EAX: 0x1f},
		{Function: 1, EBX: 0xff00ffff},
		{Function: 4, Index: 0, Flags: 1, EAX: 0x121},
		{Function: 0xb, Index: 0, Flags: 1, EBX: 1, ECX: 0x100, EDX: 7},
	}
	for _, cpus := range []int{1, 2, 3, 8} {
		for id := 0; id < cpus; id++ {
			got := guestCPUID(supported, id, cpus)
			find := func(fn, idx uint32) kvm.CPUIDEntry {
				for _, e := range got {
					if e.Function == fn && e.Index == idx {
						return e
					}
				}
				t.Fatalf("cpus=%d id=%d: no leaf %#x/%d", cpus, id, fn, idx)
				return kvm.CPUIDEntry{}
			}
			l1 := find(1, 0)
			if int(l1.EBX>>24) != id || int(l1.EBX>>16&0xff) != cpus || l1.EBX&0xffff != 0xffff || l1.ECX>>31 != 1 {
				t.Errorf("cpus=%d id=%d: leaf 1 EBX=%#x ECX=%#x", cpus, id, l1.EBX, l1.ECX)
			}
			if l4 := find(4, 0); int(l4.EAX>>26)+1 != cpus {
				t.Errorf("cpus=%d: leaf 4 says %d cores", cpus, l4.EAX>>26+1)
			}
			for _, leaf := range []uint32{0xb, 0x1f} {
				smt, core, end := find(leaf, 0), find(leaf, 1), find(leaf, 2)
				if smt.ECX>>8&0xff != 1 || smt.EBX != 1 || core.ECX>>8&0xff != 2 || int(core.EBX) != cpus || end.ECX>>8&0xff != 0 {
					t.Errorf("cpus=%d leaf %#x levels: %+v %+v %+v", cpus, leaf, smt, core, end)
				}
				if 1<<core.EAX < cpus || (cpus > 1 && 1<<(core.EAX-1) >= cpus) {
					t.Errorf("cpus=%d: core shift %d", cpus, core.EAX)
				}
				if int(smt.EDX) != id || int(core.EDX) != id {
					t.Errorf("x2APIC id %d/%d, want %d", smt.EDX, core.EDX, id)
				}
			}
		}
	}
}
