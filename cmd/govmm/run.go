package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/vmm"
)

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run [--kernel PATH] [--initrd PATH] [--cmdline STR] [--memory SIZE] [--cpus N]", stdout)
	kernel := fs.String("kernel", "", "kernel image: ELF64 (vmlinux, tiny kernels) or bzImage; empty boots the built-in demo kernel")
	initrd := fs.String("initrd", "", "initial ramdisk (an uncompressed cpio is fastest)")
	cmdline := fs.String("cmdline", "console=ttyS0", "kernel command line")
	memory := fs.String("memory", "128M", "guest memory size (K, M, G suffixes)")
	cpus := fs.Int("cpus", 1, "number of vCPUs")
	logLevel := fs.String("log-level", "warn", "VMM log level on stderr: debug, info, warn, error")
	quirks := fs.String("host-quirks", "auto", "work around a KVM that emulates guest kernel code (emulation assists, CX16 and KVM CPUID leaves hidden, noxsave): auto, on or off")
	stats := fs.Bool("stats", false, "print one statistics line per net device on stderr at exit")
	var nets netFlags
	fs.Var(&nets, "net", "virtio-net device, repeatable: tap=NAME[,mac=MAC][,queues=N][,vhost=on] or vhost-user=SOCKET[,mac=MAC][,queues=N][,server]")
	if err := fs.parse(args); err != nil {
		return err
	}

	mem, err := vmm.ParseMemSize(*memory)
	if err != nil {
		return usageErrorf("--memory: %v", err)
	}
	qmode, err := vmm.ParseQuirksMode(*quirks)
	if err != nil {
		return usageErrorf("--host-quirks: %v", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErrorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := vmm.Config{
		Cmdline: *cmdline,
		MemSize: mem,
		CPUs:    *cpus,
		Console: stdout,
		Logger:  log,
		Net:     nets,
		Quirks:  qmode,
	}
	// The guest's serial input is govmm's stdin when that is a terminal
	// (line by line: the terminal stays in cooked mode, so ^C still stops
	// govmm). A pipe or file on stdin is not fed to the guest.
	if isTerminal(os.Stdin) {
		cfg.ConsoleIn = os.Stdin
	}
	if *kernel == "" {
		cfg.Kernel, cfg.KernelName = vmm.DemoKernel(), "built-in demo kernel"
	} else {
		if cfg.Kernel, err = os.ReadFile(*kernel); err != nil {
			return usageErrorf("--kernel: %v", err)
		}
		cfg.KernelName = *kernel
	}
	if *initrd != "" {
		if cfg.Initrd, err = os.ReadFile(*initrd); err != nil {
			return usageErrorf("--initrd: %v", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return usageErrorf("%v", err)
	}

	// Signals stop the machine cleanly from here on, including while it
	// is being built (waiting for a vhost-user backend to connect).
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	m, err := vmm.NewContext(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: 130, err: fmt.Errorf("interrupted while starting: %w", err)}
		}
		return err
	}
	defer m.Close()
	res, err := m.Run(ctx)
	// Close before printing the statistics: closing stops the devices
	// (vhost devices detach then), which the statistics cover.
	if cerr := m.Close(); cerr != nil && err == nil {
		log.Warn("close machine", "err", cerr)
	}
	if *stats {
		for _, line := range m.NetStats() {
			fmt.Fprintln(stderr, line)
		}
	}
	if err != nil {
		return err
	}
	if res.Code != 0 {
		return &exitError{code: res.Code, err: errors.New(res.Reason)}
	}
	log.Info("guest stopped", "reason", res.Reason)
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// netFlags collects repeated --net values, parsed as they come so a bad
// one is reported with the flag that carried it.
type netFlags []vmm.NetConfig

func (n *netFlags) String() string { return fmt.Sprintf("%d devices", len(*n)) }

func (n *netFlags) Set(v string) error {
	c, err := vmm.ParseNetSpec(v)
	if err != nil {
		return err
	}
	*n = append(*n, c)
	return nil
}
