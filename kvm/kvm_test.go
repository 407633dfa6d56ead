package kvm

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
)

// newTestVM opens KVM and creates a VM with 64 KiB of guest memory at
// GPA 0 holding code at 0x1000, and one vCPU in real mode about to run it.
func newTestVM(t *testing.T, code []byte) (*System, *VM, *VCPU, []byte) {
	t.Helper()
	testutil.RequireKVM(t)
	sys, err := Open(DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	copy(mem[0x1000:], code)
	if err := vm.SetUserMemoryRegion(0, 0, mem, 0); err != nil {
		t.Fatal(err)
	}
	vcpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vcpu.Close() })
	s, err := vcpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := vcpu.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := vcpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	return sys, vm, vcpu, mem
}

func TestOpenErrors(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "no-kvm"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "no KVM device") {
		t.Fatalf("Open(missing) = %v, want a not-exist error that says there is no KVM device", err)
	}
	// A file that is not KVM: the API-version ioctl fails.
	p := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); err == nil || !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("Open(plain file) = %v, want ENOTTY from KVM_GET_API_VERSION", err)
	}
}

func TestSystemCapabilities(t *testing.T) {
	testutil.RequireKVM(t)
	sys, err := Open(DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	missing, err := sys.MissingCaps()
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 0 {
		t.Fatalf("KVM lacks %v", missing)
	}
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpuid) < 2 || cpuid[0].Function != 0 {
		t.Fatalf("supported CPUID: %d entries, first leaf %#x", len(cpuid), cpuid[0].Function)
	}
	msrs, err := sys.MSRIndexList()
	if err != nil || len(msrs) == 0 {
		t.Fatalf("MSR index list: %d, %v", len(msrs), err)
	}
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sys.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRunIOAndMMIOExits(t *testing.T) {
	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'K', // mov al, 'K'
		0xee,             // out dx, al
		0xec,             // in al, dx
		0xa2, 0x00, 0x80, // mov [0x8000], al   (RAM: no exit)
		0xbb, 0x00, 0xf0, // mov bx, 0xf000
		0x8e, 0xc3, // mov es, bx   (es base 0xf0000, outside RAM)
		0x26, 0xa2, 0x10, 0x00, // mov es:[0x10], al  -> MMIO write at 0xf0010
		0xf4, // hlt
	}
	_, _, vcpu, mem := newTestVM(t, code)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	ex, err := vcpu.Run()
	if err != nil {
		t.Fatal(err)
	}
	io, ok := ex.(*IOExit)
	if !ok || !io.Out || io.Port != 0x3f8 || io.Size != 1 || string(io.Data) != "K" {
		t.Fatalf("first exit = %#v, want OUT 'K' to 0x3f8", ex)
	}
	ex, err = vcpu.Run()
	if err != nil {
		t.Fatal(err)
	}
	io, ok = ex.(*IOExit)
	if !ok || io.Out || io.Port != 0x3f8 {
		t.Fatalf("second exit = %#v, want IN from 0x3f8", ex)
	}
	io.Data[0] = 0x5a
	ex, err = vcpu.Run()
	if err != nil {
		t.Fatal(err)
	}
	mm, ok := ex.(*MMIOExit)
	if !ok || !mm.Write || mm.Addr != 0xf0010 || len(mm.Data) != 1 || mm.Data[0] != 0x5a {
		t.Fatalf("third exit = %#v, want MMIO write 0x5a at 0xf0010", ex)
	}
	if mem[0x8000] != 0x5a {
		t.Fatalf("guest wrote %#x to RAM, want the IN value 0x5a", mem[0x8000])
	}
	ex, err = vcpu.Run()
	if err != nil {
		t.Fatal(err)
	}
	if ex.Reason() != ExitHLT {
		t.Fatalf("fourth exit = %v, want HLT", ex.Reason())
	}
	regs, err := vcpu.Regs()
	if err != nil {
		t.Fatal(err)
	}
	if regs.RIP != 0x1000+uint64(len(code)) {
		t.Fatalf("RIP after hlt = %#x", regs.RIP)
	}
}

func TestStopInterruptsRunningGuest(t *testing.T) {
	_, _, vcpu, _ := newTestVM(t, []byte{0xeb, 0xfe}) // jmp $
	done := make(chan Exit, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			ex, err := vcpu.Run()
			if err != nil {
				t.Error(err)
				done <- nil
				return
			}
			if _, ok := ex.(IntrExit); ok && vcpu.Stopped() {
				done <- ex
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	vcpu.Stop()
	select {
	case ex := <-done:
		if ex == nil {
			t.Fatal("Run failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not interrupt KVM_RUN within 10s")
	}
	// Every later Run returns at once.
	if ex, err := vcpu.Run(); err != nil || ex.Reason() != ExitIntr {
		t.Fatalf("Run after Stop = %v, %v", ex, err)
	}
}

func TestIoeventfdRawErrors(t *testing.T) {
	_, vm, _, _ := newTestVM(t, []byte{0xf4})
	ev, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	e := Ioeventfd{Space: SpaceMMIO, Addr: 0xd0000050, Len: 4, HasDatamatch: true, Datamatch: 1, Event: ev}
	if err := vm.AssignIoeventfd(e); err != nil {
		t.Fatal(err)
	}
	if err := vm.AssignIoeventfd(e); !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "KVM_IOEVENTFD") {
		t.Fatalf("second assign = %v, want EEXIST naming KVM_IOEVENTFD", err)
	}
	bad := e
	bad.Len = 3
	if err := vm.AssignIoeventfd(bad); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("len 3 assign = %v, want EINVAL", err)
	}
	if err := vm.DeassignIoeventfd(e); err != nil {
		t.Fatal(err)
	}
	if err := vm.DeassignIoeventfd(e); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("second deassign = %v, want ENOENT", err)
	}
}

func TestIoeventfdSignalsOnGuestWrite(t *testing.T) {
	// mov word... write 32-bit value 7 to 0xf0050 with a 32-bit operand.
	code := []byte{
		0xbb, 0x00, 0xf0, // mov bx, 0xf000
		0x8e, 0xc3, // mov es, bx
		0x66, 0xb8, 0x07, 0x00, 0x00, 0x00, // mov eax, 7
		0x26, 0x66, 0xa3, 0x50, 0x00, // mov es:[0x50], eax
		0xf4, // hlt
	}
	_, vm, vcpu, _ := newTestVM(t, code)
	ev, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	if err := vm.AssignIoeventfd(Ioeventfd{Space: SpaceMMIO, Addr: 0xf0050, Len: 4, HasDatamatch: true, Datamatch: 7, Event: ev}); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ex, err := vcpu.Run()
	if err != nil {
		t.Fatal(err)
	}
	if ex.Reason() != ExitHLT {
		t.Fatalf("exit = %#v, want HLT (the write should not exit)", ex)
	}
	n, err := ev.Drain()
	if err != nil || n != 1 {
		t.Fatalf("eventfd count = %d, %v; want 1", n, err)
	}
}

func TestClosedVMReturnsEBADF(t *testing.T) {
	_, vm, _, _ := newTestVM(t, []byte{0xf4})
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreateIRQChip(); !errors.Is(err, unix.EBADF) {
		t.Fatalf("CreateIRQChip on closed VM = %v, want EBADF", err)
	}
	if err := vm.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestNoFDLeak(t *testing.T) {
	testutil.RequireKVM(t)
	check := testutil.CheckFDLeaks(t)
	sys, err := Open(DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	vcpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	vcpu.Close()
	vm.Close()
	sys.Close()
	check()
}
