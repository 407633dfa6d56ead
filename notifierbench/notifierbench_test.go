package notifierbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

func TestRunSmall(t *testing.T) {
	testutil.RequireKVM(t)
	t.Cleanup(testutil.CheckFDLeaks(t))
	o := Options{Devices: 2, Queues: 4, Rounds: 1}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Devices != 2 || r.Queues != 4 || r.Entries != 8 || r.Rounds != 1 {
		t.Fatalf("result header %+v, want 2 devices, 4 queues, 8 entries, 1 round", r)
	}
	var names []string
	for _, m := range r.Modes {
		names = append(names, m.Mode)
		if m.Ioctls != 2*r.Entries {
			t.Errorf("%s: %d ioctls, want %d", m.Mode, m.Ioctls, 2*r.Entries)
		}
		if m.EnableMS <= 0 || m.DisableMS <= 0 {
			t.Errorf("%s: enable %v ms, disable %v ms: want positive", m.Mode, m.EnableMS, m.DisableMS)
		}
		if m.EnableUserMS < 0 || m.EnableUserMS > m.EnableMS || m.DisableUserMS < 0 || m.DisableUserMS > m.DisableMS {
			t.Errorf("%s: user times %v/%v ms outside 0..total (%v/%v)", m.Mode, m.EnableUserMS, m.DisableUserMS, m.EnableMS, m.DisableMS)
		}
	}
	if !slices.Equal(names, Modes()) {
		t.Fatalf("modes %v, want %v", names, Modes())
	}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
}

// Run leaves nothing registered: a second run on the same machine (and a
// fresh VM) works, and the ctx stops it.
func TestRunCancelled(t *testing.T) {
	testutil.RequireKVM(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, Options{Devices: 1, Queues: 1, Rounds: 1}); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Run with a cancelled context = %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"default", DefaultOptions(), true},
		{"one", Options{Devices: 1, Queues: 1, Rounds: 1}, true},
		{"no devices", Options{Devices: 0, Queues: 1, Rounds: 1}, false},
		{"no queues", Options{Devices: 1, Queues: 0, Rounds: 1}, false},
		{"no rounds", Options{Devices: 1, Queues: 1, Rounds: 0}, false},
		{"too many devices", Options{Devices: MaxDevices + 1, Queues: 1, Rounds: 1}, false},
		{"too many queues", Options{Devices: 1, Queues: MaxQueues + 1, Rounds: 1}, false},
		{"too many entries", Options{Devices: MaxDevices, Queues: MaxQueues, Rounds: 1}, false},
		{"too many rounds", Options{Devices: 1, Queues: 1, Rounds: MaxRounds + 1}, false},
		{"negative settle", Options{Devices: 1, Queues: 1, Rounds: 1, Settle: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.validate()
			if (err == nil) != tc.ok {
				t.Fatalf("validate(%+v) = %v, want ok=%v", tc.o, err, tc.ok)
			}
			if !tc.ok {
				// Run refuses before touching KVM.
				if _, err := Run(context.Background(), tc.o); err == nil {
					t.Fatal("Run accepted invalid options")
				}
			}
		})
	}
}

func sampleResult() *Result {
	return &Result{Devices: 15, Queues: 64, Entries: 960, Rounds: 5, Modes: []ModeResult{
		{Mode: ModeRaw, EnableMS: 7.1, DisableMS: 12, EnableUserMS: 0.02, DisableUserMS: 0.02, Ioctls: 1920},
		{Mode: ModeBatchedDevice, EnableMS: 7.4, DisableMS: 12.5, EnableUserMS: 0.3, DisableUserMS: 0.2, Ioctls: 1920},
		{Mode: ModeBatchedAll, EnableMS: 7.3, DisableMS: 12.2, EnableUserMS: 0.25, DisableUserMS: 0.15, Ioctls: 1920},
		{Mode: ModePerQueue, EnableMS: 70.5, DisableMS: 60.25, EnableUserMS: 63.4, DisableUserMS: 48.25, Ioctls: 1920},
	}}
}

func TestResultJSON(t *testing.T) {
	r := sampleResult()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"devices":15,"queues":64,"entries":960,"rounds":5,"modes":[` +
		`{"mode":"raw","enable_ms":7.1,"disable_ms":12,"enable_user_ms":0.02,"disable_user_ms":0.02,"ioctls":1920},` +
		`{"mode":"batched-device","enable_ms":7.4,"disable_ms":12.5,"enable_user_ms":0.3,"disable_user_ms":0.2,"ioctls":1920},` +
		`{"mode":"batched-all","enable_ms":7.3,"disable_ms":12.2,"enable_user_ms":0.25,"disable_user_ms":0.15,"ioctls":1920},` +
		`{"mode":"per-queue","enable_ms":70.5,"disable_ms":60.25,"enable_user_ms":63.4,"disable_user_ms":48.25,"ioctls":1920}]}`
	if string(b) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", b, want)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, r) {
		t.Fatalf("round trip: %+v, want %+v", back, r)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleResult().WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3+len(Modes()) {
		t.Fatalf("table has %d lines:\n%s", len(lines), out)
	}
	for i, want := range []string{
		"raw .* 7.100 .* 12.000 .* 1920 .* 0.020 / 0.020 .* 1.00x / 1.00x",
		"batched-device .* 7.400 .* 12.500 .* 1920 .* 0.300 / 0.200 .* 1.04x / 1.04x",
		"batched-all .* 7.300 .* 12.200 .* 1920 .* 0.250 / 0.150 .* 1.03x / 1.02x",
		"per-queue .* 70.500 .* 60.250 .* 1920 .* 63.400 / 48.250 .* 9.93x / 5.02x",
	} {
		fields := strings.Fields(strings.ReplaceAll(want, ".* ", ""))
		got := strings.Fields(lines[3+i])
		if !slices.Equal(got, fields) {
			t.Errorf("row %d: %q, want fields %q", i, lines[3+i], fields)
		}
	}
	if !strings.Contains(lines[0], "15 devices x 64 queues = 960 ioeventfds, median of 5 rounds") {
		t.Errorf("header %q", lines[0])
	}
}

func TestMedianMS(t *testing.T) {
	mk := func(ds ...time.Duration) []sample {
		var ss []sample
		for _, d := range ds {
			ss = append(ss, sample{enable: d})
		}
		return ss
	}
	en := func(s sample) time.Duration { return s.enable }
	for _, tc := range []struct {
		in   []sample
		want float64
	}{
		{mk(3 * time.Millisecond), 3},
		{mk(9*time.Millisecond, 1*time.Millisecond, 5*time.Millisecond), 5},
		{mk(4*time.Millisecond, 1*time.Millisecond, 2*time.Millisecond, 100*time.Millisecond), 3},
		{mk(1234567 * time.Nanosecond), 1.2346},
	} {
		if got := medianMS(tc.in, en); got != tc.want {
			t.Errorf("median of %v = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestTargets checks the numbers govmm promises at the default size
// (15 devices x 64 queues) and its growth from 32 to 64 queues. It is a
// measurement, so it only runs when asked for:
// GOVMM_BENCH_TARGETS=1 go test -run TestTargets -v ./notifierbench/
func TestTargets(t *testing.T) {
	if os.Getenv("GOVMM_BENCH_TARGETS") != "1" {
		t.Skip("timing targets: set GOVMM_BENCH_TARGETS=1 to check them")
	}
	testutil.RequireKVM(t)
	run := func(queues int) *Result {
		o := DefaultOptions()
		o.Queues = queues
		o.Rounds = 7
		r, err := Run(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		r.WriteTable(&buf)
		t.Logf("\n%s", buf.String())
		return r
	}
	r32, r64 := run(32), run(64)
	get := func(r *Result, mode string) ModeResult {
		m, ok := r.Mode(mode)
		if !ok {
			t.Fatalf("no mode %s", mode)
		}
		return m
	}
	raw, all := get(r64, ModeRaw), get(r64, ModeBatchedAll)
	check := func(ok bool, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if !ok {
			t.Errorf("MISSED: %s", msg)
			return
		}
		t.Logf("met: %s", msg)
	}
	check(all.EnableMS <= 1.25*raw.EnableMS, "batched-all enable %.3f ms <= 1.25 x raw %.3f ms (x%.2f)", all.EnableMS, raw.EnableMS, all.EnableMS/raw.EnableMS)
	check(all.DisableMS <= 1.25*raw.DisableMS, "batched-all disable %.3f ms <= 1.25 x raw %.3f ms (x%.2f)", all.DisableMS, raw.DisableMS, all.DisableMS/raw.DisableMS)
	check(all.EnableUserMS < 1 && all.DisableUserMS < 1, "batched-all user time %.3f / %.3f ms < 1 ms", all.EnableUserMS, all.DisableUserMS)
	for _, mode := range []string{ModeBatchedAll, ModeBatchedDevice} {
		a, b := get(r32, mode), get(r64, mode)
		g := (b.EnableUserMS + b.DisableUserMS) / (a.EnableUserMS + a.DisableUserMS)
		check(g <= 2.5, "%s user time x%.2f from 32 to 64 queues (<= 2.5)", mode, g)
	}
	a, b := get(r32, ModePerQueue), get(r64, ModePerQueue)
	g := (b.EnableUserMS + b.DisableUserMS) / (a.EnableUserMS + a.DisableUserMS)
	check(g >= 3, "per-queue user time x%.2f from 32 to 64 queues (>= 3)", g)
}
