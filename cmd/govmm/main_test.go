package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/vmm"
)

func run(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = runMain(args, &o, &e)
	return code, o.String(), e.String()
}

func TestRunDemo(t *testing.T) {
	testutil.RequireKVM(t)
	code, out, errOut := run("run")
	if code != 0 || out != vmm.DemoGreeting {
		t.Fatalf("govmm run = %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestRunHelloExitStatus(t *testing.T) {
	testutil.RequireKVM(t)
	k := testutil.TinyKernel(t, "hello")
	code, out, errOut := run("run", "--kernel", k, "--cmdline", "console=ttyS0 hello.exit=7")
	if code != 7 || !strings.HasPrefix(out, "hello from govmm tiny kernel\n") {
		t.Fatalf("govmm run hello = %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestRunFaultNamesTripleFault(t *testing.T) {
	testutil.RequireKVM(t)
	code, _, errOut := run("run", "--kernel", testutil.TinyKernel(t, "fault"))
	if code == 0 || !strings.Contains(errOut, "triple fault") {
		t.Fatalf("govmm run fault = %d, stderr %q", code, errOut)
	}
}

// TestBadInput checks that each bad input gives a one-line error and a
// non-zero status, never a panic or a hang.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing kernel", []string{"run", "--kernel", dir + "/nope"}, "no such file"},
		{"unreadable kernel", []string{"run", "--kernel", dir}, "is a directory"},
		{"not a kernel", []string{"run", "--kernel", "main.go"}, "neither an ELF64 nor a bzImage"},
		{"bad memory suffix", []string{"run", "--memory", "12Q"}, "want a number"},
		{"zero memory", []string{"run", "--memory", "0"}, "greater than zero"},
		{"zero cpus", []string{"run", "--cpus", "0"}, "--cpus 0"},
		{"cmdline too long", []string{"run", "--cmdline", strings.Repeat("x", 5000)}, "command line"},
		{"unknown flag", []string{"run", "--bogus"}, "flag provided but not defined"},
		{"stray argument", []string{"run", "extra"}, "unexpected argument"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"bad log level", []string{"run", "--log-level", "loud"}, "--log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "not a kernel" || tc.name == "cmdline too long" {
				testutil.RequireKVM(t)
			}
			code, _, errOut := run(tc.args...)
			if code == 0 {
				t.Fatalf("exit 0, want non-zero; stderr %q", errOut)
			}
			first := strings.SplitN(strings.TrimSpace(errOut), "\n", 2)[0]
			if !strings.Contains(first, tc.want) {
				t.Fatalf("first stderr line %q does not contain %q (full: %q)", first, tc.want, errOut)
			}
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine ") {
				t.Fatalf("panicked: %s", errOut)
			}
		})
	}
}

func TestHelpListsFlagsWithDefaults(t *testing.T) {
	code, out, _ := run("run", "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{"-kernel", "-initrd", "-cmdline", "-memory", "(default \"128M\")", "-cpus", "(default 1)"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}
