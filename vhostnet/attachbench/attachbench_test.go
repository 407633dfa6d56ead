package attachbench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

// TestRunSmall runs a small bench and checks the result's shape: one
// commit per operation when batched, one per queue otherwise, and every
// phase measured.
func TestRunSmall(t *testing.T) {
	testutil.RequireKVM(t)
	t.Cleanup(testutil.CheckFDLeaks(t))
	res, err := Run(context.Background(), Options{Devices: 3, Pairs: 2, Rounds: 2, QueueSize: 64, Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Notifiers != 12 || len(res.Modes) != 2 {
		t.Fatalf("result %+v", res)
	}
	b, ok := res.Mode("batched")
	if !ok || b.Attach.Commits != 1 || b.Detach.Commits != 1 {
		t.Errorf("batched %+v", b)
	}
	p, ok := res.Mode("per-queue")
	if !ok || p.Attach.Commits != 12 || p.Detach.Commits != 12 {
		t.Errorf("per-queue %+v", p)
	}
	for _, m := range res.Modes {
		if m.Attach.NotifierMS <= 0 || m.Attach.BackendMS <= 0 || m.Detach.NotifierMS <= 0 || m.Detach.BackendMS <= 0 {
			t.Errorf("%s: a phase was not measured: %+v", m.Mode, m)
		}
	}
	var out bytes.Buffer
	if err := res.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "per-queue  attach") {
		t.Errorf("table:\n%s", out.String())
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{Devices: 0, Pairs: 1, Rounds: 1, QueueSize: 64},
		{Devices: 20, Pairs: 1, Rounds: 1, QueueSize: 64},
		{Devices: 1, Pairs: 33, Rounds: 1, QueueSize: 64},
		{Devices: 1, Pairs: 1, Rounds: 0, QueueSize: 64},
		{Devices: 1, Pairs: 1, Rounds: 1, QueueSize: 100},
		{Devices: 1, Pairs: 1, Rounds: 1, QueueSize: 64, Settle: -1},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
