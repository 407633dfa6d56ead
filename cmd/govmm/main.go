// Command govmm is a minimal KVM hypervisor: it boots Linux guests and
// tiny test kernels with virtio-net networking.
//
// Usage:
//
//	govmm run [flags]             boot a kernel (see govmm run --help)
//	govmm bench <what> [flags]    measurements (notifiers, startup, attach)
//	govmm probe                   report what this host's KVM can do
//	govmm vhost-user-net [flags]  a vhost-user-net backend over a TAP
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// exitError carries an exit status through the command functions, so main
// is the only place that calls os.Exit.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// errUsage marks command-line mistakes (exit status 2).
var errUsage = errors.New("usage")

func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "boot a kernel (ELF64 vmlinux, bzImage or a tiny test kernel)", cmdRun},
		{"bench", "measure: notifiers (ioeventfd commits), startup, attach", cmdBench},
		{"probe", "report what this host's KVM can do and which guests it can run", cmdProbe},
		{"vhost-user-net", "serve a vhost-user-net backend over a TAP device", cmdVhostUserNet},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: govmm <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-15s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'govmm <command> --help' for the flags of a command.")
}

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

// runMain runs govmm with args and returns its exit status.
func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		if err == nil {
			return 0
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintf(stderr, "govmm %s: %s\n", name, oneLine(ee.err.Error()))
			}
			return ee.code
		}
		fmt.Fprintf(stderr, "govmm %s: %s\n", name, err)
		return 1
	}
	fmt.Fprintf(stderr, "govmm: unknown command %q\n", name)
	usage(stderr)
	return 2
}

// oneLine keeps usage errors to one line; multi-line diagnostics (register
// dumps) are printed whole only for runtime failures.
func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 && strings.HasPrefix(s, "usage") {
		return s[:i]
	}
	return s
}

// flagSet is a FlagSet that reports errors in one line instead of
// exiting, and prints every flag with its default only for --help.
type flagSet struct {
	*flag.FlagSet
	out      io.Writer
	synopsis string
}

func newFlagSet(name, synopsis string, out io.Writer) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every parse error too.
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, out: out, synopsis: synopsis}
}

// parse parses args, turning flag errors into usage errors (status 2) and
// rejecting stray positional arguments.
func (fs *flagSet) parse(args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(fs.out, "usage: govmm %s\n\nflags:\n", fs.synopsis)
		fs.SetOutput(fs.out)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		return err
	}
	if err != nil {
		return usageErrorf("%v (see govmm %s --help)", err, fs.Name())
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q (see govmm %s --help)", fs.Arg(0), fs.Name())
	}
	return nil
}
