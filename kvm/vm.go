package kvm

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// VM owns a KVM virtual machine fd.
type VM struct {
	mu       sync.Mutex
	f        *os.File
	mmapSize int
	closed   bool
}

func (vm *VM) fd() int { return int(vm.f.Fd()) }

// Memory region flags for SetUserMemoryRegion.
const (
	MemLogDirtyPages = 1 << 0
	MemReadonly      = 1 << 1
)

// SetUserMemoryRegion maps host memory mem at guest-physical address gpa in
// slot. mem must stay mapped (and must not be moved: use an mmap, never a Go
// heap slice) until the slot is removed or the VM is closed.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte, flags uint32) error {
	if len(mem) == 0 {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d: empty region", slot)
	}
	r := userspaceMemoryRegion{Slot: slot, Flags: flags, GuestPhysAddr: gpa, MemorySize: uint64(len(mem)), UserspaceAddr: sliceAddr(mem)}
	_, err := ioctlPtr(vm.fd(), fmt.Sprintf("KVM_SET_USER_MEMORY_REGION slot %d gpa %#x size %#x", slot, gpa, len(mem)), kvmSetUserMemoryRegion, &r)
	return err
}

// SetTSSAddr places the three pages KVM needs for real-mode emulation on
// Intel hosts (KVM_SET_TSS_ADDR); addr must be outside guest RAM.
func (vm *VM) SetTSSAddr(addr uint64) error {
	_, err := ioctl(vm.fd(), "KVM_SET_TSS_ADDR", kvmSetTSSAddr, uintptr(addr))
	return err
}

// SetIdentityMapAddr places the identity-map page (KVM_SET_IDENTITY_MAP_ADDR).
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctlPtr(vm.fd(), "KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, &addr)
	return err
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and per-vCPU LAPICs.
func (vm *VM) CreateIRQChip() error {
	_, err := ioctl(vm.fd(), "KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0)
	return err
}

// CreatePIT2 creates the in-kernel i8254 timer with a dummy speaker port.
func (vm *VM) CreatePIT2() error {
	c := pitConfig{Flags: pitSpeakerDummy}
	_, err := ioctlPtr(vm.fd(), "KVM_CREATE_PIT2", kvmCreatePIT2, &c)
	return err
}

// IRQChip reads the state of one in-kernel interrupt controller.
func (vm *VM) IRQChip(chipID uint32) (*IRQChip, error) {
	c := &IRQChip{ChipID: chipID}
	_, err := ioctlPtr(vm.fd(), "KVM_GET_IRQCHIP", kvmGetIRQChip, c)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// SetIRQChip writes the state of one in-kernel interrupt controller.
func (vm *VM) SetIRQChip(c *IRQChip) error {
	_, err := ioctlPtr(vm.fd(), "KVM_SET_IRQCHIP", kvmSetIRQChip, c)
	return err
}

// MaskPIC masks every line of both 8259 PICs. govmm routes interrupts
// through the IOAPIC; an unmasked PIC would also deliver each GSI through
// LINT0 as a spurious low vector, which a tiny kernel (or an early Linux)
// does not expect.
func (vm *VM) MaskPIC() error {
	for _, id := range []uint32{IRQChipPICMaster, IRQChipPICSlave} {
		c, err := vm.IRQChip(id)
		if err != nil {
			return fmt.Errorf("mask PIC %d: %w", id, err)
		}
		c.Data[picStateIMROffset] = 0xff
		if err := vm.SetIRQChip(c); err != nil {
			return fmt.Errorf("mask PIC %d: %w", id, err)
		}
	}
	return nil
}

// IRQLine sets the level of an in-kernel irqchip input (KVM_IRQ_LINE).
func (vm *VM) IRQLine(gsi uint32, high bool) error {
	l := irqLevel{IRQ: gsi}
	if high {
		l.Level = 1
	}
	_, err := ioctlPtr(vm.fd(), "KVM_IRQ_LINE", kvmIRQLine, &l)
	return err
}

// SignalMSI injects a message-signalled interrupt.
func (vm *VM) SignalMSI(m MSI) error {
	_, err := ioctlPtr(vm.fd(), "KVM_SIGNAL_MSI", kvmSignalMSI, &m)
	return err
}

// AssignIRQFD makes every Signal of ev raise gsi (edge) in the in-kernel
// irqchip, without a trip through userspace.
func (vm *VM) AssignIRQFD(ev *EventFD, gsi uint32) error {
	fd := ev.Fd()
	if fd < 0 {
		return fmt.Errorf("KVM_IRQFD gsi %d: %w", gsi, unix.EBADF)
	}
	a := irqfdArg{FD: uint32(fd), GSI: gsi}
	_, err := ioctlPtr(vm.fd(), fmt.Sprintf("KVM_IRQFD gsi %d", gsi), kvmIRQFD, &a)
	return err
}

// DeassignIRQFD undoes AssignIRQFD.
func (vm *VM) DeassignIRQFD(ev *EventFD, gsi uint32) error {
	fd := ev.Fd()
	if fd < 0 {
		return fmt.Errorf("KVM_IRQFD deassign gsi %d: %w", gsi, unix.EBADF)
	}
	a := irqfdArg{FD: uint32(fd), GSI: gsi, Flags: irqfdFlagDeassign}
	_, err := ioctlPtr(vm.fd(), fmt.Sprintf("KVM_IRQFD deassign gsi %d", gsi), kvmIRQFD, &a)
	return err
}

func ioeventfdToArg(e Ioeventfd, deassign bool) ioeventfdArg {
	a := ioeventfdArg{Addr: e.Addr, Len: e.Len, FD: int32(e.Event.Fd())}
	if e.HasDatamatch {
		a.Flags |= ioeventfdFlagDatamatch
		a.Datamatch = e.Datamatch
	}
	if e.Space == SpacePIO {
		a.Flags |= ioeventfdFlagPIO
	}
	if deassign {
		a.Flags |= ioeventfdFlagDeassign
	}
	return a
}

// AssignIoeventfd registers one ioeventfd with KVM (a raw KVM_IOEVENTFD).
// govmm code goes through IoEventSpace instead, which batches and diffs.
func (vm *VM) AssignIoeventfd(e Ioeventfd) error {
	if e.Event == nil {
		return fmt.Errorf("KVM_IOEVENTFD assign: nil eventfd")
	}
	a := ioeventfdToArg(e, false)
	_, err := ioctlPtr(vm.fd(), "KVM_IOEVENTFD assign", kvmIoeventfd, &a)
	return err
}

// DeassignIoeventfd removes one ioeventfd registration. The eventfd must
// still be open: KVM looks the registration up by its eventfd context.
func (vm *VM) DeassignIoeventfd(e Ioeventfd) error {
	if e.Event == nil {
		return fmt.Errorf("KVM_IOEVENTFD deassign: nil eventfd")
	}
	a := ioeventfdToArg(e, true)
	_, err := ioctlPtr(vm.fd(), "KVM_IOEVENTFD deassign", kvmIoeventfd, &a)
	return err
}

// CreateVCPU creates vCPU id and maps its kvm_run structure.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd(), fmt.Sprintf("KVM_CREATE_VCPU %d", id), kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(int(fd))
	run, err := unix.Mmap(int(fd), 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{id: id, f: os.NewFile(fd, fmt.Sprintf("kvm-vcpu:%d", id)), run: run}, nil
}

// Close releases the VM fd. vCPUs hold their own references in the
// kernel; close them first to free the VM.
func (vm *VM) Close() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil
	}
	vm.closed = true
	return vm.f.Close()
}
