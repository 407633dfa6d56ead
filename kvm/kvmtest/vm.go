package kvmtest

import (
	"testing"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
)

// NewVM returns a bare VM of the real kernel (no memory and no vCPU:
// KVM_IOEVENTFD needs neither), closed with its kvm.System when the test
// ends, for checking against the kernel what the fake models. It skips
// unless /dev/kvm can be opened (testutil.RequireKVM).
func NewVM(t testing.TB) *kvm.VM {
	t.Helper()
	testutil.RequireKVM(t)
	sys, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

// NewEventFD returns an eventfd that is closed when the test ends.
func NewEventFD(t testing.TB) *kvm.EventFD {
	t.Helper()
	ev, err := kvm.NewEventFD()
	if err != nil {
		t.Fatalf("eventfd: %v", err)
	}
	t.Cleanup(func() { ev.Close() })
	return ev
}
