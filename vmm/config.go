package vmm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/govmm/govmm/boot"
)

// Config describes a machine. It is pure data: Validate checks it without
// touching the host, so every bad-input case is testable anywhere.
type Config struct {
	// Kernel is the kernel image (ELF64 or bzImage) and KernelName where
	// it came from, for messages.
	Kernel     []byte
	KernelName string
	// Initrd is an optional initial ramdisk.
	Initrd []byte
	// Cmdline is the kernel command line as the user gave it; the VMM
	// may append to it (virtio-mmio device descriptions, host quirks).
	Cmdline string
	// MemSize is guest RAM in bytes.
	MemSize uint64
	// CPUs is the number of vCPUs.
	CPUs int
	// Net lists the virtio-net devices, in virtio-mmio slot order.
	Net []NetConfig
	// Quirks says whether to work around a KVM that emulates guest
	// kernel code (QuirksAuto decides from the host CPU).
	Quirks QuirksMode

	// Console receives the guest's serial output; ConsoleIn, if set,
	// feeds the guest's serial input.
	Console   io.Writer
	ConsoleIn io.Reader

	// KVMPath is the KVM device, /dev/kvm when empty.
	KVMPath string
	// Logger receives VMM diagnostics; slog.Default-like discard if nil.
	Logger *slog.Logger
}

// Limits govmm enforces before touching the host.
const (
	MinMemSize = 16 << 20 // a tiny kernel needs little; Linux needs more
	MaxMemSize = 1 << 40  // 1 TiB: well past anything this VMM is for
	MaxCPUs    = 254      // APIC IDs 0..253 (the IOAPIC takes one more); xAPIC limit
)

// ErrInvalidConfig is wrapped by every Validate error.
var ErrInvalidConfig = errors.New("invalid configuration")

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if len(c.Kernel) == 0 {
		return bad("no kernel image")
	}
	if c.MemSize < MinMemSize {
		return bad("memory %s is below the minimum of %s", FormatSize(c.MemSize), FormatSize(MinMemSize))
	}
	if c.MemSize > MaxMemSize {
		return bad("memory %s is above the maximum of %s", FormatSize(c.MemSize), FormatSize(MaxMemSize))
	}
	if c.MemSize%4096 != 0 {
		return bad("memory %d is not a multiple of 4 KiB", c.MemSize)
	}
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return bad("--cpus %d is out of range 1..%d", c.CPUs, MaxCPUs)
	}
	if strings.IndexByte(c.Cmdline, 0) >= 0 {
		return bad("kernel command line contains a NUL byte")
	}
	if err := ValidateNets(c.Net, boot.MaxVirtioDevices); err != nil {
		return bad("%v", err)
	}
	return nil
}

// ParseMemSize parses a memory size such as "128M", "1G", "512K" or a
// plain byte count. Suffixes are binary (K = 1024) and case-insensitive;
// "MiB"/"MB" spellings are accepted.
func ParseMemSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("memory size is empty")
	}
	num := t
	var shift uint
	up := strings.ToUpper(t)
	for _, suf := range []struct {
		s     string
		shift uint
	}{{"KIB", 10}, {"MIB", 20}, {"GIB", 30}, {"TIB", 40}, {"KB", 10}, {"MB", 20}, {"GB", 30}, {"TB", 40}, {"K", 10}, {"M", 20}, {"G", 30}, {"T", 40}, {"B", 0}} {
		if strings.HasSuffix(up, suf.s) {
			num, shift = t[:len(t)-len(suf.s)], suf.shift
			break
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory size %q: want a number with an optional K, M, G or T suffix", s)
	}
	if v == 0 {
		return 0, fmt.Errorf("memory size %q: must be greater than zero", s)
	}
	if v > (1<<63)>>shift {
		return 0, fmt.Errorf("memory size %q is too large", s)
	}
	return v << shift, nil
}

// FormatSize prints a byte count the way ParseMemSize reads it.
func FormatSize(v uint64) string {
	switch {
	case v >= 1<<30 && v%(1<<30) == 0:
		return fmt.Sprintf("%dG", v>>30)
	case v >= 1<<20 && v%(1<<20) == 0:
		return fmt.Sprintf("%dM", v>>20)
	case v >= 1<<10 && v%(1<<10) == 0:
		return fmt.Sprintf("%dK", v>>10)
	}
	return fmt.Sprintf("%d", v)
}
