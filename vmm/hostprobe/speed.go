package hostprobe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// The throwaway VM of the speed measurement: 2 MiB of RAM at GPA 0,
// identity-mapped by one 2 MiB user-accessible page.
const (
	speedMemSize = 2 << 20
	speedGDT     = 0x500
	speedPML4    = 0x1000
	speedPDPT    = 0x2000
	speedPD      = 0x3000
	speedCode    = 0x10000
	speedStack   = 0x80000
	speedTSS     = 0xfffbd000 // KVM_SET_TSS_ADDR: outside RAM
	// speedDonePort is where the loop reports completion with an OUT.
	speedDonePort = 0x3f8
)

// speedLoop counts RAX from 1 up to RBX, then writes AL to speedDonePort
// and spins. Its OUT works at CPL3 because the vCPU starts with IOPL=3.
var speedLoopCode = [...]byte{
	0x48, 0x31, 0xc0, // xor rax, rax
	0x48, 0xff, 0xc0, // 1: inc rax
	0x48, 0x39, 0xd8, // cmp rax, rbx
	0x75, 0xf8, // jne 1b
	0x66, 0xba, speedDonePort & 0xff, speedDonePort >> 8, // mov dx, speedDonePort
	0xee,       // out dx, al
	0xeb, 0xfe, // jmp .
}

// GDT: null, 64-bit code and data at DPL0, then the same at DPL3.
var speedGDTEntries = [...]uint64{
	0,
	0x00af9b000000ffff, // 0x08: code, DPL0, L
	0x00cf93000000ffff, // 0x10: data, DPL0
	0x00affb000000ffff, // 0x18: code, DPL3, L
	0x00cff3000000ffff, // 0x20: data, DPL3
}

// Adaptive sizing: a timed run must last at least speedMinRun; the
// iteration count grows toward speedTargetRun, at most speedMaxGrowth-fold
// per step, and the final size is run speedRepeats times. speedDeadline bounds a measurement on a pathologically slow
// host (the vCPU is stopped and the measurement fails).
const (
	speedFirstN    = 1000
	speedMinRun    = 20 * time.Millisecond
	speedTargetRun = 30 * time.Millisecond
	speedMaxGrowth = 1000
	speedRepeats   = 3
	speedMaxN      = 1 << 40
	speedDeadline  = 10 * time.Second
)

// MeasureSupervisorSpeed times a tight loop at guest CPL0 and at CPL3 in a
// throwaway VM and returns both speeds in loop iterations per second.
// Where CPL0 is far slower than CPL3 (IsSupervisorEmulated), guest kernel
// code runs in KVM's instruction emulator. It takes well under a second.
func MeasureSupervisorSpeed(sys *kvm.System) (cpl0, cpl3 float64, err error) {
	return measureSpeed(context.Background(), sys)
}

func measureSpeed(ctx context.Context, sys *kvm.System) (cpl0, cpl3 float64, err error) {
	v, err := newSpeedVM(sys)
	if err != nil {
		return 0, 0, fmt.Errorf("measure supervisor speed: %w", err)
	}
	defer v.close()

	// Stop the vCPU when ctx ends or the deadline passes; a stopped vCPU
	// makes every later Run return at once, so the measurement ends.
	stopCtx := context.AfterFunc(ctx, v.vcpu.Stop)
	defer stopCtx()
	timer := time.AfterFunc(speedDeadline, v.vcpu.Stop)
	defer timer.Stop()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cpl0, err = v.rate(ctx, 0); err != nil {
		return 0, 0, fmt.Errorf("measure supervisor speed at CPL0: %w", err)
	}
	if cpl3, err = v.rate(ctx, 3); err != nil {
		return 0, 0, fmt.Errorf("measure supervisor speed at CPL3: %w", err)
	}
	return cpl0, cpl3, nil
}

type speedVM struct {
	mem   []byte
	vm    *kvm.VM
	vcpu  *kvm.VCPU
	sregs kvm.Sregs // the vCPU's initial segment registers
}

func newSpeedVM(sys *kvm.System) (_ *speedVM, err error) {
	v := &speedVM{}
	defer func() {
		if err != nil {
			v.close()
		}
	}()
	v.mem, err = unix.Mmap(-1, 0, speedMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes of guest memory: %w", speedMemSize, err)
	}
	v.layout()
	if v.vm, err = sys.CreateVM(); err != nil {
		return nil, err
	}
	if err := v.vm.SetTSSAddr(speedTSS); err != nil {
		return nil, err
	}
	if err := v.vm.SetUserMemoryRegion(0, 0, v.mem, 0); err != nil {
		return nil, err
	}
	if v.vcpu, err = v.vm.CreateVCPU(0); err != nil {
		return nil, err
	}
	// Long mode is only allowed when CPUID says the CPU has it.
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	if err := v.vcpu.SetCPUID(cpuid); err != nil {
		return nil, err
	}
	if v.sregs, err = v.vcpu.Sregs(); err != nil {
		return nil, err
	}
	return v, nil
}

// layout writes the page tables, the GDT and the loop into guest memory.
func (v *speedVM) layout() {
	le := binary.LittleEndian
	const present, writable, user, huge = 1 << 0, 1 << 1, 1 << 2, 1 << 7
	le.PutUint64(v.mem[speedPML4:], speedPDPT|present|writable|user)
	le.PutUint64(v.mem[speedPDPT:], speedPD|present|writable|user)
	le.PutUint64(v.mem[speedPD:], 0|present|writable|user|huge) // 0-2 MiB
	for i, e := range speedGDTEntries {
		le.PutUint64(v.mem[speedGDT+8*i:], e)
	}
	copy(v.mem[speedCode:], speedLoopCode[:])
}

// enter sets the vCPU up to run the loop n times at cpl (0 or 3).
func (v *speedVM) enter(cpl uint8, n uint64) error {
	const (
		cr0PE, cr0MP, cr0ET, cr0NE, cr0WP, cr0AM, cr0PG = 1 << 0, 1 << 1, 1 << 4, 1 << 5, 1 << 16, 1 << 18, 1 << 31
		cr4PAE                                          = 1 << 5
		eferLME, eferLMA                                = 1 << 8, 1 << 10
		rflagsFixed, rflagsIOPL3                        = 1 << 1, 3 << 12
	)
	codeSel, dataSel := uint16(0x08), uint16(0x10)
	if cpl == 3 {
		codeSel, dataSel = 0x18|3, 0x20|3
	}
	code := kvm.Segment{Limit: 0xffffffff, Selector: codeSel, Type: 11, Present: 1, DPL: cpl, S: 1, L: 1, G: 1}
	data := kvm.Segment{Limit: 0xffffffff, Selector: dataSel, Type: 3, Present: 1, DPL: cpl, DB: 1, S: 1, G: 1}
	s := v.sregs
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: speedGDT, Limit: uint16(8*len(speedGDTEntries) - 1)}
	s.CR0 = cr0PE | cr0MP | cr0ET | cr0NE | cr0WP | cr0AM | cr0PG
	s.CR3 = speedPML4
	s.CR4 = cr4PAE
	s.EFER = eferLME | eferLMA
	if err := v.vcpu.SetSregs(s); err != nil {
		return err
	}
	r := kvm.Regs{RIP: speedCode, RBX: n, RSP: speedStack, RFLAGS: rflagsFixed}
	if cpl == 3 {
		r.RFLAGS |= rflagsIOPL3 // port I/O at CPL3, for the final OUT
	}
	return v.vcpu.SetRegs(r)
}

// errSpeedStopped reports a measurement cut short by its deadline.
var errSpeedStopped = errors.New("guest loop did not finish in time")

// timedRun runs the loop n times at cpl and returns how long it took.
func (v *speedVM) timedRun(ctx context.Context, cpl uint8, n uint64) (time.Duration, error) {
	if err := v.enter(cpl, n); err != nil {
		return 0, err
	}
	start := time.Now()
	var ex kvm.Exit
	for {
		var err error
		if ex, err = v.vcpu.Run(); err != nil {
			return 0, err
		}
		if _, ok := ex.(kvm.IntrExit); !ok {
			break
		}
		if v.vcpu.Stopped() {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("%d iterations at CPL%d: %w (deadline %v)", n, cpl, errSpeedStopped, speedDeadline)
		}
		// A stray signal interrupted KVM_RUN: the guest just goes on.
	}
	elapsed := time.Since(start)
	io, ok := ex.(*kvm.IOExit)
	if !ok || !io.Out || io.Port != speedDonePort {
		return 0, fmt.Errorf("%d iterations at CPL%d: unexpected exit %v (%#v)", n, cpl, ex.Reason(), ex)
	}
	// Check that the loop really ran n times, at the intended CPL.
	r, err := v.vcpu.Regs()
	if err != nil {
		return 0, err
	}
	s, err := v.vcpu.Sregs()
	if err != nil {
		return 0, err
	}
	if r.RAX != n || uint8(s.CS.Selector&3) != cpl {
		return 0, fmt.Errorf("loop ended with RAX %d (want %d) at CPL%d (want %d)", r.RAX, n, s.CS.Selector&3, cpl)
	}
	return elapsed, nil
}

// rate measures loop iterations per second at cpl: it grows the iteration
// count until one run lasts at least speedMinRun, then repeats that run
// and keeps the fastest of speedRepeats (the host's CPUs are shared: a
// slower run measures the other load, not KVM).
func (v *speedVM) rate(ctx context.Context, cpl uint8) (float64, error) {
	n := uint64(speedFirstN)
	for {
		d, err := v.timedRun(ctx, cpl, n)
		if err != nil {
			return 0, err
		}
		if d >= speedMinRun || n >= speedMaxN {
			for range speedRepeats - 1 {
				again, err := v.timedRun(ctx, cpl, n)
				if err != nil {
					return 0, err
				}
				d = min(d, again)
			}
			return float64(n) / d.Seconds(), nil
		}
		grow := float64(speedTargetRun) / float64(max(d, time.Microsecond))
		grow = min(max(grow, 2), speedMaxGrowth)
		n = min(uint64(float64(n)*grow), speedMaxN)
	}
}

func (v *speedVM) close() {
	if v.vcpu != nil {
		v.vcpu.Close()
	}
	if v.vm != nil {
		v.vm.Close()
	}
	if v.mem != nil {
		unix.Munmap(v.mem)
	}
}
