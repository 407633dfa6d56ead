package vmm

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

// runGuest runs kernel to completion under a timeout, through the same
// New/Run/Close path as `govmm run`.
func runGuest(t *testing.T, cfg Config, timeout time.Duration) (Result, string, error) {
	t.Helper()
	r := runGuestIn(t, nil, cfg, timeout, nil)
	return r.res, r.out, r.err
}

// guestRun is what runGuestIn saw.
type guestRun struct {
	res      Result
	out      string   // the console
	m        *Machine // closed
	err      error    // Run's
	closeErr error
}

// runGuestIn fills in cfg's test defaults (64 MiB, one vCPU, the console
// captured), creates the machine (inside ns if not nil, where its TAPs are
// found or created), calls during (if set) before running it, runs it
// until it stops or timeout, and closes it.
func runGuestIn(t *testing.T, ns *testutil.NetNS, cfg Config, timeout time.Duration, during func(m *Machine)) guestRun {
	t.Helper()
	testutil.RequireKVM(t)
	var out testutil.SyncBuffer
	cfg.Console = &out
	if cfg.MemSize == 0 {
		cfg.MemSize = 64 << 20
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	var m *Machine
	create := func() (err error) {
		m, err = New(cfg)
		return err
	}
	var err error
	if ns != nil {
		err = ns.Do(create)
	} else {
		err = create()
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	if during != nil {
		during(m)
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, errors.New("test timeout"))
	defer cancel()
	res, err := m.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("guest did not stop within %v; console:\n%s", timeout, out.String())
	}
	return guestRun{res: res, out: out.String(), m: m, err: err, closeErr: m.Close()}
}

func readKernel(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testutil.TinyKernel(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBootHello(t *testing.T) {
	testutil.RequireKVM(t)
	k := readKernel(t, "hello")
	res, out, err := runGuest(t, Config{Kernel: k, KernelName: "hello", Cmdline: "console=ttyS0 hello.exit=42", MemSize: 64 << 20}, 60*time.Second)
	if err != nil {
		t.Fatalf("Run: %v\nconsole:\n%s", err, out)
	}
	for _, want := range []string{
		"hello from govmm tiny kernel\n",
		"cmdline: console=ttyS0 hello.exit=42",
		"memory: 63 MiB\n",
		"cpl3: ok\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q; got:\n%s", want, out)
		}
	}
	if res.Code != 42 {
		t.Errorf("exit code %d (%s), want 42", res.Code, res.Reason)
	}
}

func TestBootFaultIsTripleFault(t *testing.T) {
	testutil.RequireKVM(t)
	res, out, err := runGuest(t, Config{Kernel: readKernel(t, "fault"), KernelName: "fault"}, 60*time.Second)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(out, "fault: triple faulting") {
		t.Errorf("console: %q", out)
	}
	if res.Code == 0 || !strings.Contains(res.Reason, "triple fault") {
		t.Errorf("result %+v, want non-zero code naming the triple fault", res)
	}
}

func TestTripleFaultWithRebootTIsCleanReset(t *testing.T) {
	testutil.RequireKVM(t)
	res, _, err := runGuest(t, Config{Kernel: readKernel(t, "fault"), KernelName: "fault", Cmdline: "panic=-1 reboot=t"}, 60*time.Second)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Code != 0 || !strings.Contains(res.Reason, "reboot=t") {
		t.Errorf("result %+v, want a clean reset", res)
	}
}

func TestBootDemoKernel(t *testing.T) {
	res, out, err := runGuest(t, Config{Kernel: DemoKernel(), KernelName: "demo"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if out != DemoGreeting || res.Code != 0 {
		t.Fatalf("demo printed %q and stopped with %+v", out, res)
	}
}

func TestContextCancelStopsSpinningGuest(t *testing.T) {
	testutil.RequireKVM(t)
	spin := flatELF([]byte{0xeb, 0xfe}) // jmp $
	m, err := New(Config{Kernel: spin, KernelName: "spin", MemSize: 32 << 20, CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() {
		res, _ := m.Run(ctx)
		done <- res
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case res := <-done:
		if res.Code != 130 {
			t.Errorf("result %+v, want code 130", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
}

func TestKernelTooBigForMemory(t *testing.T) {
	testutil.RequireKVM(t)
	img := flatELF(make([]byte, 20<<20)) // 20 MiB of code at 1 MiB
	_, err := New(Config{Kernel: img, KernelName: "big", MemSize: 16 << 20, CPUs: 1})
	if err == nil || !strings.Contains(err.Error(), "big") {
		t.Fatalf("New = %v, want an error about the kernel not fitting", err)
	}
	t.Log(err)
}

func TestNotAKernel(t *testing.T) {
	_, err := New(Config{Kernel: []byte("#!/bin/sh\necho not a kernel\n"), KernelName: "script", MemSize: 16 << 20, CPUs: 1})
	if err == nil || !strings.Contains(err.Error(), "neither an ELF64 nor a bzImage") {
		t.Fatalf("New = %v", err)
	}
}

func TestNoKVMDevice(t *testing.T) {
	_, err := New(Config{Kernel: DemoKernel(), KernelName: "demo", MemSize: 16 << 20, CPUs: 1, KVMPath: "/nonexistent/kvm"})
	if err == nil || !strings.Contains(err.Error(), "no KVM device") {
		t.Fatalf("New = %v, want a no-KVM-device error", err)
	}
}

func TestNoFDsLeftAfterClose(t *testing.T) {
	testutil.RequireKVM(t)
	k := readKernel(t, "hello")
	// Warm up lazily created runtime fds (epoll for os.File, etc.).
	if _, _, err := runGuest(t, Config{Kernel: k, KernelName: "hello"}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	check := testutil.CheckFDLeaks(t)
	for i := 0; i < 3; i++ {
		if _, _, err := runGuest(t, Config{Kernel: k, KernelName: "hello", CPUs: 2}, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	check()
}
