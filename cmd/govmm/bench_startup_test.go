package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

// asGovmmEnv makes this test binary act as govmm itself:
// benchStartup re-executes os.Executable() (here, the test binary) as
// `govmm run ...`, so the child must run runMain instead of the tests.

// startupHarness builds testdata/bench/bin/startup_harness with make and
// returns its path.
func startupHarness(t *testing.T) string {
	t.Helper()
	testutil.RequireCommand(t, "gcc")
	testutil.RequireCommand(t, "make")
	dir := filepath.Join(testutil.RepoRoot(t), "testdata", "bench")
	if out, err := exec.Command("make", "-s", "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("make -C %s: %v\n%s", dir, err, out)
	}
	return filepath.Join(dir, "bin", "startup_harness")
}

func TestBenchStartup(t *testing.T) {
	testutil.RequireKVM(t)
	kernel := testutil.TinyKernel(t, "hello")
	harness := startupHarness(t)
	t.Setenv(asGovmmEnv, "1")

	var out, errOut bytes.Buffer
	if err := benchStartup([]string{"--kernel", kernel, "--harness", harness, "--runs", "2", "--json"}, &out, &errOut); err != nil {
		t.Fatalf("bench startup: %v (stderr %q)", err, errOut.String())
	}
	var rep startupReport
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("decode JSON %q: %v", out.String(), err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON object: %q", out.String())
	}

	const greeting = "hello from govmm tiny kernel"
	if rep.Runs != 2 || rep.Memory != "128M" || rep.Kernel != "hello.elf" || rep.Target != 2 {
		t.Errorf("header = runs %d, memory %q, kernel %q, target %g; want 2, 128M, hello.elf, 2",
			rep.Runs, rep.Memory, rep.Kernel, rep.Target)
	}
	for _, side := range []struct {
		name string
		s    startupSide
	}{{"govmm", rep.Govmm}, {"harness", rep.Harness}} {
		s := side.s
		if s.Greeting != greeting || s.ExitCode != 0 {
			t.Errorf("%s: guest said %q and exited %d, want %q and 0", side.name, s.Greeting, s.ExitCode, greeting)
		}
		if s.FirstByte.MinMS <= 0 || s.FirstByte.MedianMS < s.FirstByte.MinMS || s.FirstByte.P90MS < s.FirstByte.MedianMS {
			t.Errorf("%s: first-byte stats out of order or not positive: %+v", side.name, s.FirstByte)
		}
		if s.Exit.MinMS < s.FirstByte.MinMS || s.Exit.P90MS < s.Exit.MedianMS {
			t.Errorf("%s: exit stats %+v inconsistent with first byte %+v", side.name, s.Exit, s.FirstByte)
		}
		if len(s.Command) == 0 {
			t.Errorf("%s: no command recorded", side.name)
		}
	}
	if rep.Harness.Command[0] != harness || !strings.Contains(strings.Join(rep.Govmm.Command, " "), " run --kernel "+kernel) {
		t.Errorf("commands = %q and %q", rep.Govmm.Command, rep.Harness.Command)
	}
	want := rep.Govmm.FirstByte.MedianMS / rep.Harness.FirstByte.MedianMS
	if extra := rep.Govmm.FirstByte.MedianMS - rep.Harness.FirstByte.MedianMS; rep.ExtraFirstByteMS != extra {
		t.Errorf("extra first-byte time %g ms, want %g from the medians", rep.ExtraFirstByteMS, extra)
	}
	if rep.RatioFirstByte != want || rep.TargetMet != (want <= rep.Target) {
		t.Errorf("ratio %g (target met %v), want %g from the medians", rep.RatioFirstByte, rep.TargetMet, want)
	}
	t.Logf("first byte: govmm %.2f ms, harness %.2f ms, ratio %.2fx",
		rep.Govmm.FirstByte.MedianMS, rep.Harness.FirstByte.MedianMS, rep.RatioFirstByte)
}

func TestBenchStartupTable(t *testing.T) {
	rep := &startupReport{Kernel: "hello.elf", Memory: "128M", Runs: 3, Target: 2,
		Govmm:          startupSide{FirstByte: startupStats{3, 2, 4}, Exit: startupStats{5, 4, 6}, Greeting: "hi"},
		Harness:        startupSide{FirstByte: startupStats{1, 1, 2}, Exit: startupStats{2, 2, 3}, Greeting: "hi"},
		RatioFirstByte: 3, RatioExit: 2.5, ExtraFirstByteMS: 2, TargetMet: false}
	var b bytes.Buffer
	if err := rep.writeTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first byte  govmm", "3.00x (target <= 2x: NOT met); govmm adds 2.00 ms", "2.50x", "harness       1.00      1.00      2.00"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestBenchStartupBadInput(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "k.elf")
	if err := os.WriteFile(kernel, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no kernel", nil, "--kernel is required"},
		{"missing kernel", []string{"--kernel", filepath.Join(dir, "nope")}, "no such file"},
		{"zero runs", []string{"--kernel", kernel, "--runs", "0"}, "--runs 0"},
		{"bad memory", []string{"--kernel", kernel, "--memory", "12Q"}, "--memory"},
		{"missing harness", []string{"--kernel", kernel, "--harness", filepath.Join(dir, "h")}, "make -C testdata/bench"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := benchStartup(tc.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("benchStartup(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	const ms = 1_000_000 // ns
	for _, tc := range []struct {
		name string
		in   []int64 // ms
		want startupStats
	}{
		{"one", []int64{5}, startupStats{5, 5, 5}},
		{"even count", []int64{4, 1, 3, 2}, startupStats{2.5, 1, 4}},
		{"ten", []int64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, startupStats{5.5, 1, 9}},
		{"odd count", []int64{7, 1, 3}, startupStats{3, 1, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ds []time.Duration
			for _, v := range tc.in {
				ds = append(ds, time.Duration(v*ms))
			}
			if got := summarize(ds); got != tc.want {
				t.Fatalf("summarize(%v ms) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}
