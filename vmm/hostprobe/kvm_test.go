package hostprobe

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/kvm"
)

func TestMeasureSupervisorSpeed(t *testing.T) {
	testutil.RequireKVM(t)
	sys, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	start := time.Now()
	cpl0, cpl3, err := MeasureSupervisorSpeed(sys)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CPL0 %.3g loops/s, CPL3 %.3g loops/s, ratio %.0f, measured in %v", cpl0, cpl3, cpl3/cpl0, took)
	if cpl0 <= 0 || cpl3 <= 0 {
		t.Fatalf("speeds %g, %g", cpl0, cpl3)
	}
	// The budget is about 0.5 s; allow for a machine shared with other
	// work.
	if took > 3*time.Second {
		t.Errorf("measurement took %v", took)
	}
}

func TestMeasureStopsWhenContextEnds(t *testing.T) {
	testutil.RequireKVM(t)
	sys, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = measureSpeed(ctx, sys)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("measureSpeed with a 5 ms context = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("cancelled measurement took %v", took)
	}
}

func TestProbe(t *testing.T) {
	testutil.RequireKVM(t)
	r, err := Probe(context.Background(), kvm.DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	r.WriteText(&b)
	t.Logf("report:\n%s", b.String())

	if r.APIVersion != kvm.APIVersion {
		t.Errorf("API version %d", r.APIVersion)
	}
	if len(r.Caps) != len(capsToProbe()) {
		t.Errorf("%d capabilities reported", len(r.Caps))
	}
	if r.MeasureError != "" {
		t.Fatalf("speed not measured: %s", r.MeasureError)
	}
	// Consistency: the flag, the ratio and the threshold agree.
	ratio := r.CPL3LoopsPerSec / r.CPL0LoopsPerSec
	if r.SupervisorEmulated != (ratio >= EmulatedRatio) {
		t.Errorf("SupervisorEmulated %v but CPL3/CPL0 = %.1f (threshold %d)", r.SupervisorEmulated, ratio, EmulatedRatio)
	}
	// A CPU with VT-x or AMD-V visible runs guest kernel code in hardware.
	if r.SupervisorEmulated && (r.CPUHasVMX || r.CPUHasSVM) {
		t.Errorf("supervisor emulated although the CPU shows vmx=%v svm=%v", r.CPUHasVMX, r.CPUHasSVM)
	}
	if r.Quirks() != QuirksFor(r.SupervisorEmulated) {
		t.Error("Quirks disagree with SupervisorEmulated")
	}
	wantV, wantText := r.decide()
	if r.Verdict != wantV || r.VerdictText != wantText {
		t.Errorf("verdict %v %q, want %v %q", r.Verdict, r.VerdictText, wantV, wantText)
	}
	switch {
	case len(r.MissingCaps()) > 0:
		if r.Verdict != VerdictNone {
			t.Errorf("missing %v but verdict %v", r.MissingCaps(), r.Verdict)
		}
	case r.SupervisorEmulated:
		if r.Verdict != VerdictLinuxToInit && r.Verdict != VerdictTinyKernels {
			t.Errorf("emulated but verdict %v", r.Verdict)
		}
	default:
		if r.Verdict != VerdictLinuxWithUserSpace {
			t.Errorf("native but verdict %v", r.Verdict)
		}
	}
	tun, _ := deviceOpens(TUNPath)
	vhost, _ := deviceOpens(VhostNetPath)
	if r.TUN != tun || r.VhostNet != vhost {
		t.Errorf("TUN %v vhost-net %v, but the devices open: %v %v", r.TUN, r.VhostNet, tun, vhost)
	}
	if !strings.HasSuffix(b.String(), "verdict: "+r.VerdictText+"\n") {
		t.Error("report does not end with the verdict line")
	}
}

func TestProbeErrors(t *testing.T) {
	if _, err := Probe(context.Background(), filepath.Join(t.TempDir(), "no-kvm")); err == nil || !strings.Contains(err.Error(), "no KVM device") {
		t.Fatalf("Probe(missing device) = %v", err)
	}
	testutil.RequireKVM(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Probe(ctx, kvm.DevicePath); !errors.Is(err, context.Canceled) {
		t.Fatalf("Probe(cancelled) = %v, want context.Canceled", err)
	}
}
