package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/govmm/govmm/vmm"
)

// Startup benchmark defaults.
const (
	// defaultStartupHarness is where `make -C testdata/bench` puts the
	// direct KVM harness, relative to the repository root.
	defaultStartupHarness = "testdata/bench/bin/startup_harness"
	// startupCmdline is given to both sides, so the guest does the same
	// work whatever govmm run's default command line becomes.
	startupCmdline = "console=ttyS0"
	// startupTarget is the goal: govmm's median time to the first serial
	// byte within this factor of the harness's.
	startupTarget = 2.0
	// startupRunTimeout bounds one boot, so a hung guest cannot hang the
	// benchmark.
	startupRunTimeout = 60 * time.Second
)

// benchStartup implements `govmm bench startup`: it boots a kernel N times
// with `govmm run` (this executable) and N times with a minimal direct KVM
// harness written in C, interleaved, and compares the time from exec to the
// guest's first serial byte (and to exit) as a ratio measured in one run.
func benchStartup(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench startup", "bench startup --kernel PATH [--harness PATH] [--runs N] [--memory SIZE] [--json]", stdout)
	kernel := fs.String("kernel", "", "kernel to boot on both sides (an ELF64 tiny kernel such as testdata/kernels/bin/hello.elf)")
	harness := fs.String("harness", defaultStartupHarness, "the direct KVM harness (build it with: make -C testdata/bench)")
	runs := fs.Int("runs", 20, "rounds; each boots govmm and the harness once, in alternating order")
	memory := fs.String("memory", "128M", "guest memory size for both sides (K, M, G suffixes)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *kernel == "" {
		return usageErrorf("--kernel is required (e.g. --kernel testdata/kernels/bin/hello.elf)")
	}
	if *runs < 1 {
		return usageErrorf("--runs %d: want at least 1", *runs)
	}
	mem, err := vmm.ParseMemSize(*memory)
	if err != nil {
		return usageErrorf("--memory: %v", err)
	}
	if _, err := os.Stat(*kernel); err != nil {
		return usageErrorf("--kernel: %v", err)
	}
	if _, err := os.Stat(*harness); err != nil {
		return fmt.Errorf("startup harness %s: %w (build it with: make -C testdata/bench, or pass --harness)", *harness, err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the govmm executable: %w", err)
	}

	o := startupOptions{
		kernel: *kernel,
		memory: vmm.FormatSize(mem),
		runs:   *runs,
		govmm:  []string{self, "run", "--kernel", *kernel, "--memory", vmm.FormatSize(mem), "--cmdline", startupCmdline},
		harness: []string{*harness, "-m", strconv.FormatUint(mem, 10), "-c", startupCmdline,
			*kernel},
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := runStartupBench(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	return rep.writeTable(stdout)
}

type startupOptions struct {
	kernel, memory string
	runs           int
	govmm, harness []string // argv of each side
}

// startupSample is one boot of one side.
type startupSample struct {
	firstByte time.Duration // exec to the first byte on stdout
	total     time.Duration // exec to exit
	exitCode  int
	out       []byte
}

// startupStats summarises durations, in milliseconds.
type startupStats struct {
	MedianMS float64 `json:"median_ms"`
	MinMS    float64 `json:"min_ms"`
	P90MS    float64 `json:"p90_ms"`
}

// startupSide is what one side (govmm or the harness) measured.
type startupSide struct {
	Command   []string     `json:"command"`
	FirstByte startupStats `json:"first_byte"`
	Exit      startupStats `json:"exit"`
	ExitCode  int          `json:"exit_code"`
	// Greeting is the guest's first serial line.
	Greeting string `json:"greeting"`
}

// startupReport is the benchmark's result; `--json` prints it as is.
type startupReport struct {
	Kernel  string      `json:"kernel"`
	Memory  string      `json:"memory"`
	Runs    int         `json:"runs"`
	Govmm   startupSide `json:"govmm"`
	Harness startupSide `json:"harness"`
	// RatioFirstByte is govmm's median time to the first serial byte over
	// the harness's; RatioExit the same for the time to exit.
	RatioFirstByte float64 `json:"ratio_first_byte"`
	RatioExit      float64 `json:"ratio_exit"`
	// ExtraFirstByteMS is govmm's median time to the first byte minus the
	// harness's: what govmm adds to the floor, in milliseconds.
	ExtraFirstByteMS float64 `json:"extra_first_byte_ms"`
	Target           float64 `json:"target"`
	TargetMet        bool    `json:"target_met"`
}

// runStartupBench boots each side once to warm the page cache (not
// counted), then o.runs rounds alternating which side goes first, and
// checks that both sides' guests said and returned the same.
func runStartupBench(ctx context.Context, o startupOptions) (*startupReport, error) {
	sides := [2][]string{o.govmm, o.harness}
	names := [2]string{"govmm", "harness"}
	var samples [2][]startupSample
	for i := range sides {
		if _, err := measureStartup(ctx, sides[i]); err != nil {
			return nil, fmt.Errorf("warm-up %s: %w", names[i], err)
		}
	}
	for round := 0; round < o.runs; round++ {
		order := [2]int{0, 1}
		if round%2 == 1 {
			order = [2]int{1, 0}
		}
		for _, i := range order {
			s, err := measureStartup(ctx, sides[i])
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", round+1, names[i], err)
			}
			samples[i] = append(samples[i], s)
		}
	}

	rep := &startupReport{Kernel: filepath.Base(o.kernel), Memory: o.memory, Runs: o.runs, Target: startupTarget}
	out := [2]*startupSide{&rep.Govmm, &rep.Harness}
	for i, ss := range samples {
		side := out[i]
		side.Command = sides[i]
		var first, total []time.Duration
		for _, s := range ss {
			first = append(first, s.firstByte)
			total = append(total, s.total)
			if s.exitCode != ss[0].exitCode || firstLine(s.out) != firstLine(ss[0].out) {
				return nil, fmt.Errorf("%s: the guest's first line or exit status changed between runs (%q, exit %d, then %q, exit %d)",
					names[i], firstLine(ss[0].out), ss[0].exitCode, firstLine(s.out), s.exitCode)
			}
		}
		side.FirstByte, side.Exit = summarize(first), summarize(total)
		side.ExitCode = ss[0].exitCode
		side.Greeting = firstLine(ss[0].out)
	}
	if rep.Govmm.Greeting != rep.Harness.Greeting || rep.Govmm.ExitCode != rep.Harness.ExitCode {
		return nil, fmt.Errorf("govmm and the harness ran the guest differently, so their times do not compare: "+
			"govmm printed %q and exited %d, the harness printed %q and exited %d",
			rep.Govmm.Greeting, rep.Govmm.ExitCode, rep.Harness.Greeting, rep.Harness.ExitCode)
	}
	rep.RatioFirstByte = rep.Govmm.FirstByte.MedianMS / rep.Harness.FirstByte.MedianMS
	rep.RatioExit = rep.Govmm.Exit.MedianMS / rep.Harness.Exit.MedianMS
	rep.ExtraFirstByteMS = rep.Govmm.FirstByte.MedianMS - rep.Harness.FirstByte.MedianMS
	rep.TargetMet = rep.RatioFirstByte <= startupTarget
	return rep, nil
}

// measureStartup runs argv with stdout on a pipe and times, from just
// before exec, the first byte read from the pipe and the process's exit.
// A non-zero exit status is recorded, not an error: the guest chooses it.
func measureStartup(ctx context.Context, argv []string) (startupSample, error) {
	ctx, cancel := context.WithTimeout(ctx, startupRunTimeout)
	defer cancel()
	r, w, err := os.Pipe()
	if err != nil {
		return startupSample{}, fmt.Errorf("pipe: %w", err)
	}
	defer r.Close()
	var errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, &errOut
	// Closing the read end when the context ends unblocks the reads below
	// even if a grandchild kept the write end open.
	stopRead := context.AfterFunc(ctx, func() { r.Close() })
	defer stopRead()

	start := time.Now()
	err = cmd.Start()
	w.Close()
	if err != nil {
		return startupSample{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	var s startupSample
	buf := make([]byte, 4096)
	n, rerr := r.Read(buf)
	s.firstByte = time.Since(start)
	s.out = append(s.out, buf[:n]...)
	if rerr == nil {
		rest, err := io.ReadAll(r)
		s.out = append(s.out, rest...)
		rerr = err
	}
	werr := cmd.Wait()
	s.total = time.Since(start)

	if ctx.Err() != nil {
		return s, fmt.Errorf("%s: no exit within %v: %w", argv[0], startupRunTimeout, ctx.Err())
	}
	var ee *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &ee) && ee.Exited():
		s.exitCode = ee.ExitCode()
	default:
		return s, fmt.Errorf("%s: %w%s", argv[0], werr, stderrNote(errOut.Bytes()))
	}
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return s, fmt.Errorf("read the output of %s: %w", argv[0], rerr)
	}
	if n == 0 {
		return s, fmt.Errorf("%s exited %d without writing to its serial console%s", argv[0], s.exitCode, stderrNote(errOut.Bytes()))
	}
	return s, nil
}

func stderrNote(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	return " (stderr: " + firstLine([]byte(s)) + ")"
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// summarize returns the median, the minimum and the 90th percentile
// (nearest rank) of ds, which must not be empty.
func summarize(ds []time.Duration) startupStats {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	p90 := s[int(math.Ceil(0.9*float64(n)))-1]
	return startupStats{MedianMS: ms(med), MinMS: ms(s[0]), P90MS: ms(p90)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *startupReport) writeTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "startup: %s, %s guest memory, %d rounds (govmm and harness interleaved, after one warm-up each)\n",
		r.Kernel, r.Memory, r.Runs)
	fmt.Fprintf(&b, "time from exec to the guest's first serial byte, and to exit (ms):\n")
	fmt.Fprintf(&b, "  %-11s %-8s %9s %9s %9s\n", "", "", "median", "min", "p90")
	row := func(what, who string, s startupStats) {
		fmt.Fprintf(&b, "  %-11s %-8s %9.2f %9.2f %9.2f\n", what, who, s.MedianMS, s.MinMS, s.P90MS)
	}
	row("first byte", "govmm", r.Govmm.FirstByte)
	row("", "harness", r.Harness.FirstByte)
	row("exit", "govmm", r.Govmm.Exit)
	row("", "harness", r.Harness.Exit)
	verdict := "met"
	if !r.TargetMet {
		verdict = "NOT met"
	}
	fmt.Fprintf(&b, "govmm/harness, first byte (medians): %.2fx (target <= %gx: %s); govmm adds %.2f ms\n",
		r.RatioFirstByte, r.Target, verdict, r.ExtraFirstByteMS)
	fmt.Fprintf(&b, "govmm/harness, exit (medians):       %.2fx\n", r.RatioExit)
	fmt.Fprintf(&b, "guest: %q, exit status %d on both sides\n", r.Govmm.Greeting, r.Govmm.ExitCode)
	_, err := io.WriteString(w, b.String())
	return err
}
