package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"

	"github.com/govmm/govmm/boot"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/mmio"
	"github.com/govmm/govmm/vmm/assist"
	"github.com/govmm/govmm/vmm/hostprobe"
)

// Legacy port assignments (a PC's, as Linux and the tiny kernels expect).
const (
	portCOM1                     = 0x3f8
	portCOM1IRQ                  = 4
	portDebugExit                = 0x501
	portI8042                    = 0x60
	portI8042Size                = 5 // 0x60..0x64
	portPOST                     = 0x80
	portCOM2, portCOM3, portCOM4 = 0x2f8, 0x3e8, 0x2e8
)

// Result says why a machine stopped.
type Result struct {
	// Code is the exit status govmm run returns: the debug-exit value,
	// 0 for a guest reset or poweroff, non-zero for a fault.
	Code int
	// Reason is a one-line human explanation.
	Reason string
}

// Machine is one running (or runnable) VM.
type Machine struct {
	cfg     Config
	log     *slog.Logger
	cmdline string

	sys    *kvm.System
	vm     *kvm.VM
	ram    *GuestRAM
	vcpus  []*kvm.VCPU
	pio    *mmio.Bus
	mmio   *mmio.Bus
	serial *mmio.Serial
	irqfds []irqfd
	ioev   *kvm.IoEventSpace

	quirks  hostprobe.Quirks
	assists assist.Counters

	// devClosers release devices (stop their workers, remove TAPs they
	// created, close backends); Close runs them in reverse order after
	// the vCPUs have stopped and before the VM and guest RAM go away.
	devClosers []func() error
	netStats   []func() string
	vhost      *vhostGroup // the vhost devices' attach path (net_vhost.go)

	stopOnce sync.Once
	stopMu   sync.Mutex
	result   Result
	runErr   error
	done     chan struct{}

	closeOnce sync.Once
	closeErr  error
}

type irqfd struct {
	ev  *kvm.EventFD
	gsi uint32
}

// Trigger implements mmio.Interrupt: an edge on the irqfd's GSI.
func (i irqfd) Trigger() error { return i.ev.Signal() }

// New builds a machine from cfg: it validates cfg, opens KVM, allocates
// guest memory, loads the kernel and creates the vCPUs and devices. On
// error everything acquired so far is released.
func New(cfg Config) (*Machine, error) { return NewContext(context.Background(), cfg) }

// NewContext is New whose waits (for a vhost-user backend to connect)
// end when ctx does.
func NewContext(ctx context.Context, cfg Config) (_ *Machine, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k, err := boot.ParseKernel(cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", cfg.KernelName, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	console := cfg.Console
	if console == nil {
		console = io.Discard
	}
	m := &Machine{cfg: cfg, log: log, cmdline: cfg.Cmdline, done: make(chan struct{})}
	var why string
	m.quirks, why = decideQuirks(cfg.Quirks, hostprobe.GuessSupervisorEmulated)
	if m.quirks.Any() {
		log.Info("host quirks on: guest kernel code is emulated by this KVM", "why", why,
			"assists", m.quirks.Assists, "hide_cx16", m.quirks.HideCX16, "hide_kvm_cpuid_leaves", m.quirks.HideKVMLeaves, "kernel_args", m.quirks.KernelArgs())
		m.cmdline = withKernelArgs(m.cmdline, m.quirks.KernelArgs())
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()

	path := cfg.KVMPath
	if path == "" {
		path = kvm.DevicePath
	}
	if m.sys, err = kvm.Open(path); err != nil {
		return nil, err
	}
	missing, err := m.sys.MissingCaps()
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("KVM lacks required capabilities: %v", missing)
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return nil, err
	}
	if err := m.vm.SetTSSAddr(boot.TSSAddr); err != nil {
		return nil, err
	}
	if err := m.vm.SetIdentityMapAddr(boot.IdentityMapAddr); err != nil {
		return nil, err
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err := m.vm.MaskPIC(); err != nil {
		return nil, err
	}
	if err := m.vm.CreatePIT2(); err != nil {
		return nil, err
	}
	m.ioev = kvm.NewIoEventSpace(m.vm)

	if m.ram, err = newGuestRAM(cfg.MemSize); err != nil {
		return nil, err
	}
	for slot, r := range m.ram.Regions() {
		if err := m.vm.SetUserMemoryRegion(uint32(slot), r.GPA, r.Mem, 0); err != nil {
			return nil, err
		}
	}

	if err := m.setupDevices(console); err != nil {
		return nil, err
	}
	if err := m.setupNet(ctx); err != nil {
		return nil, err
	}

	entry, err := boot.Load(m.ram.Low(), k, boot.Config{MemSize: cfg.MemSize, Cmdline: m.cmdline, Initrd: cfg.Initrd, CPUs: cfg.CPUs})
	if err != nil {
		return nil, fmt.Errorf("load kernel %s: %w", cfg.KernelName, err)
	}

	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	supported = hostprobe.ApplyCPUIDQuirks(supported, m.quirks)
	for i := 0; i < cfg.CPUs; i++ {
		v, err := m.vm.CreateVCPU(i)
		if err != nil {
			return nil, err
		}
		m.vcpus = append(m.vcpus, v)
		if err := setupVCPU(v, guestCPUID(supported, i, cfg.CPUs), entry); err != nil {
			return nil, err
		}
	}
	log.Info("machine ready", "kernel", cfg.KernelName, "memory", FormatSize(cfg.MemSize), "cpus", cfg.CPUs, "cmdline", m.cmdline, "entry", fmt.Sprintf("%#x", entry.RIP))
	return m, nil
}

// newIRQFD creates an eventfd wired to gsi in the in-kernel irqchip.
func (m *Machine) newIRQFD(gsi uint32) (irqfd, error) {
	ev, err := kvm.NewEventFD()
	if err != nil {
		return irqfd{}, err
	}
	if err := m.vm.AssignIRQFD(ev, gsi); err != nil {
		ev.Close()
		return irqfd{}, err
	}
	i := irqfd{ev: ev, gsi: gsi}
	m.irqfds = append(m.irqfds, i)
	return i, nil
}

func (m *Machine) setupDevices(console io.Writer) error {
	m.pio = mmio.NewBus("pio")
	m.mmio = mmio.NewBus("mmio")
	irq, err := m.newIRQFD(mmio.COM1IRQ)
	if err != nil {
		return fmt.Errorf("serial interrupt: %w", err)
	}
	m.serial = mmio.NewSerial(console, irq)
	devs := []struct {
		base, size uint64
		d          mmio.Device
	}{
		{mmio.COM1Port, mmio.SerialSize, m.serial},
		{mmio.DebugExitPort, mmio.DebugExitSize, mmio.NewDebugExit(m.onDebugExit)},
		{mmio.POSTPort, 1, mmio.NewSink(0xff)},
		{portCOM2, mmio.SerialSize, mmio.NewSink(0xff)},
		{portCOM3, mmio.SerialSize, mmio.NewSink(0xff)},
		{portCOM4, mmio.SerialSize, mmio.NewSink(0xff)},
	}
	for _, d := range devs {
		if err := m.pio.Insert(d.base, d.size, d.d); err != nil {
			return fmt.Errorf("port I/O device at %#x: %w", d.base, err)
		}
	}
	if err := mmio.NewI8042(m.onReset).Attach(m.pio); err != nil {
		return fmt.Errorf("i8042: %w", err)
	}
	return nil
}

func (m *Machine) onDebugExit(code uint8) {
	m.stop(Result{Code: int(code), Reason: fmt.Sprintf("guest wrote %d to the debug-exit port", code)}, nil)
}

func (m *Machine) onReset() {
	m.stop(Result{Code: 0, Reason: "guest reset through the i8042 controller"}, nil)
}

// stop records the first reason to stop and makes every vCPU leave KVM_RUN.
func (m *Machine) stop(r Result, err error) {
	m.stopOnce.Do(func() {
		m.stopMu.Lock()
		m.result, m.runErr = r, err
		m.stopMu.Unlock()
		for _, v := range m.vcpus {
			v.Stop()
		}
		close(m.done)
	})
}

// Cmdline is the command line the guest receives (the user's plus what
// the VMM appended).
func (m *Machine) Cmdline() string { return m.cmdline }

// Run runs the guest until it stops itself (debug-exit, reset, triple
// fault), an exit cannot be handled (returned as an error that shows the
// exit and the registers), or ctx is done. Run may be called once.
func (m *Machine) Run(ctx context.Context) (Result, error) {
	var wg sync.WaitGroup
	for _, v := range m.vcpus {
		wg.Add(1)
		go func(v *kvm.VCPU) {
			defer wg.Done()
			m.runVCPU(v)
		}(v)
	}
	if m.cfg.ConsoleIn != nil {
		go m.pumpConsoleIn(m.cfg.ConsoleIn)
	}
	select {
	case <-ctx.Done():
		m.stop(Result{Code: 130, Reason: "stopped: " + context.Cause(ctx).Error()}, nil)
	case <-m.done:
	}
	wg.Wait()
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	return m.result, m.runErr
}

func (m *Machine) pumpConsoleIn(r io.Reader) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m.serial.Enqueue(buf[:n])
		}
		if err != nil {
			return
		}
		select {
		case <-m.done:
			return
		default:
		}
	}
}

// runVCPU is one vCPU's goroutine: it stays on one OS thread (KVM ties a
// vCPU's state to the thread that runs it, and Stop signals that thread).
func (m *Machine) runVCPU(v *kvm.VCPU) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		ex, err := v.Run()
		if err != nil {
			m.stop(Result{Code: 1}, fmt.Errorf("vCPU %d: %w", v.ID(), err))
			return
		}
		switch e := ex.(type) {
		case *kvm.IOExit:
			m.handleIO(e)
		case *kvm.MMIOExit:
			m.handleMMIO(e)
		case kvm.IntrExit:
			if v.Stopped() {
				return
			}
		case kvm.ShutdownExit:
			m.stop(m.shutdownResult(v), nil)
			return
		case *kvm.InternalErrorExit:
			if e.Suberror == kvm.InternalErrorEmulation && m.quirks.Assists {
				if err := m.assist(v); err != nil {
					m.stop(Result{Code: 1}, fmt.Errorf("vCPU %d: %w%s", v.ID(), err, dumpRegs(v)))
					return
				}
				continue
			}
			m.stop(Result{Code: 1}, m.unhandled(v, ex))
			return
		default:
			m.stop(Result{Code: 1}, m.unhandled(v, ex))
			return
		}
	}
}

// shutdownResult explains a KVM_EXIT_SHUTDOWN (a triple fault). Linux
// booted with reboot=t resets the machine exactly this way, so then it is
// a clean reset; otherwise it is a guest crash.
func (m *Machine) shutdownResult(v *kvm.VCPU) Result {
	if hasParam(m.cmdline, "reboot", "t") || hasParam(m.cmdline, "reboot", "triple") {
		return Result{Code: 0, Reason: "guest reset by triple fault (reboot=t)"}
	}
	where := ""
	if regs, err := v.Regs(); err == nil {
		where = fmt.Sprintf(" at RIP %#x", regs.RIP)
	}
	return Result{Code: 1, Reason: fmt.Sprintf("guest triple fault (KVM_EXIT_SHUTDOWN) on vCPU %d%s", v.ID(), where)}
}

func hasParam(cmdline, key, value string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == key+"="+value {
			return true
		}
	}
	return false
}

func (m *Machine) handleIO(e *kvm.IOExit) {
	size := int(e.Size)
	for i := 0; i+size <= len(e.Data); i += size {
		d := e.Data[i : i+size]
		var err error
		if e.Out {
			err = m.pio.Write(uint64(e.Port), d)
		} else {
			err = m.pio.Read(uint64(e.Port), d)
		}
		if err != nil {
			// Guests probe ports that do not exist; real hardware floats
			// the bus high. Log at debug level only.
			if !e.Out {
				for j := range d {
					d[j] = 0xff
				}
			}
			m.log.Debug("unhandled port I/O", "port", fmt.Sprintf("%#x", e.Port), "size", size, "out", e.Out)
		}
	}
}

func (m *Machine) handleMMIO(e *kvm.MMIOExit) {
	var err error
	if e.Write {
		err = m.mmio.Write(e.Addr, e.Data)
	} else {
		err = m.mmio.Read(e.Addr, e.Data)
	}
	if err != nil {
		if !e.Write {
			for j := range e.Data {
				e.Data[j] = 0
			}
		}
		m.log.Debug("unhandled MMIO", "addr", fmt.Sprintf("%#x", e.Addr), "len", len(e.Data), "write", e.Write)
	}
}

// unhandled builds the error for an exit govmm cannot handle, with the
// vCPU's registers so the failure can be diagnosed from the message alone.
func (m *Machine) unhandled(v *kvm.VCPU, ex kvm.Exit) error {
	var b strings.Builder
	fmt.Fprintf(&b, "vCPU %d: unhandled exit %v", v.ID(), ex.Reason())
	switch e := ex.(type) {
	case *kvm.InternalErrorExit:
		fmt.Fprintf(&b, " (suberror %d", e.Suberror)
		if e.Suberror == kvm.InternalErrorEmulation {
			b.WriteString(": instruction emulation failed")
		}
		fmt.Fprintf(&b, ", data %#x)", e.Data)
	case *kvm.FailEntryExit:
		fmt.Fprintf(&b, " (hardware reason %#x on CPU %d)", e.HardwareReason, e.CPU)
	case *kvm.SystemEventExit:
		fmt.Fprintf(&b, " (type %d)", e.Type)
	}
	b.WriteString(dumpRegs(v))
	return errors.New(b.String())
}

func dumpRegs(v *kvm.VCPU) string {
	r, err := v.Regs()
	if err != nil {
		return fmt.Sprintf("\n  (registers unavailable: %v)", err)
	}
	s, err := v.Sregs()
	if err != nil {
		return fmt.Sprintf("\n  (segment registers unavailable: %v)", err)
	}
	return fmt.Sprintf("\n  RIP=%016x RSP=%016x RFLAGS=%08x CPL=%d"+
		"\n  RAX=%016x RBX=%016x RCX=%016x RDX=%016x"+
		"\n  RSI=%016x RDI=%016x RBP=%016x"+
		"\n  CR0=%08x CR2=%016x CR3=%016x CR4=%08x EFER=%x",
		r.RIP, r.RSP, r.RFLAGS, s.CS.Selector&3, r.RAX, r.RBX, r.RCX, r.RDX, r.RSI, r.RDI, r.RBP,
		s.CR0, s.CR2, s.CR3, s.CR4, s.EFER)
}

// Close releases everything the machine holds. It is idempotent. Call it
// after Run has returned (or instead of Run).
func (m *Machine) Close() error {
	m.closeOnce.Do(func() {
		var errs []error
		for _, v := range m.vcpus {
			v.Stop()
		}
		for _, v := range m.vcpus {
			errs = append(errs, v.Close())
		}
		for i := len(m.devClosers) - 1; i >= 0; i-- {
			errs = append(errs, m.devClosers[i]())
		}
		for _, i := range m.irqfds {
			if m.vm != nil {
				errs = append(errs, m.vm.DeassignIRQFD(i.ev, i.gsi))
			}
			errs = append(errs, i.ev.Close())
		}
		if m.vm != nil {
			errs = append(errs, m.vm.Close())
		}
		if m.sys != nil {
			errs = append(errs, m.sys.Close())
		}
		if m.ram != nil {
			errs = append(errs, m.ram.Close())
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}
