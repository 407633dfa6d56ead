package kvm_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
)

// commitBench enables and disables n QueueNotify entries (64 queues per
// device) in one commit each, against the counting fake: the space's own
// cost, with nothing of the kernel's. The entries are staged in a random
// order, so the sort does its full O(n log n) work (entries staged in
// address order, as attach paths do, sort in linear time). All entries
// share one eventfd (the kernel allows that), so n is not bounded by the
// fd limit.
type commitBench struct {
	s       *kvm.IoEventSpace
	k       *kvmtest.Kernel
	entries []kvm.Ioeventfd
	ids     []kvm.IoEventID
}

func newCommitBench(ev *kvm.EventFD, n int, seed uint64) *commitBench {
	k := kvmtest.NewCounting()
	c := &commitBench{s: kvm.NewIoEventSpace(k), k: k, ids: make([]kvm.IoEventID, n)}
	for _, i := range rand.New(rand.NewPCG(seed, uint64(n))).Perm(n) {
		c.entries = append(c.entries, queue(i/64, i%64, ev))
	}
	return c
}

// threadCPU returns the CPU time consumed so far by the calling thread:
// unlike wall time, it does not count time spent waiting for a CPU that
// other processes hold.
func threadCPU(tb testing.TB) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// round returns the durations of the enabling and the disabling commit,
// wall and CPU time.
func (c *commitBench) round(tb testing.TB) (enable, disable, enableCPU, disableCPU time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := c.k.Counts()
	tx := c.s.Begin()
	for i, e := range c.entries {
		id, err := tx.Add(e)
		if err != nil {
			tb.Fatal(err)
		}
		c.ids[i] = id
	}
	cpu, start := threadCPU(tb), time.Now()
	err := tx.Commit()
	enable, enableCPU = time.Since(start), threadCPU(tb)-cpu
	if err != nil {
		tb.Fatal(err)
	}
	tx = c.s.Begin()
	for _, id := range c.ids {
		if err := tx.Remove(id); err != nil {
			tb.Fatal(err)
		}
	}
	cpu, start = threadCPU(tb), time.Now()
	err = tx.Commit()
	disable, disableCPU = time.Since(start), threadCPU(tb)-cpu
	if err != nil {
		tb.Fatal(err)
	}
	after, n := c.k.Counts(), uint64(len(c.entries))
	if after.Assigns-before.Assigns != n || after.Deassigns-before.Deassigns != n || c.s.Len() != 0 {
		tb.Fatalf("%d entries: %+v -> %+v, want %d assigns and deassigns", n, before, after, n)
	}
	return enable, disable, enableCPU, disableCPU
}

// BenchmarkCommit measures one commit enabling n entries from empty and one
// disabling them to empty. ns/entry should grow like log n: well under 2x
// from 1k to 100k entries.
func BenchmarkCommit(b *testing.B) {
	ev := kvmtest.NewEventFD(b)
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("n=%dk", n/1000), func(b *testing.B) {
			c := newCommitBench(ev, n, 1)
			c.round(b) // warm the space's buffers
			var en, dis, cpu time.Duration
			for b.Loop() {
				e, d, ec, dc := c.round(b)
				en += e
				dis += d
				cpu += ec + dc
			}
			runs := float64(b.N)
			b.ReportMetric(float64((en+dis).Nanoseconds())/runs/float64(2*n), "ns/entry")
			b.ReportMetric(float64(cpu.Nanoseconds())/runs/float64(2*n), "cpu-ns/entry")
			b.ReportMetric(float64(en.Nanoseconds())/runs/float64(n), "enable-ns/entry")
			b.ReportMetric(float64(dis.Nanoseconds())/runs/float64(n), "disable-ns/entry")
			b.ReportMetric(float64(en.Nanoseconds())/runs/1e6, "enable-ms")
			b.ReportMetric(float64(dis.Nanoseconds())/runs/1e6, "disable-ms")
		})
	}
}

// TestCommitCostScaling guards the O(n log n) commit against a quadratic
// regression (which would make the 64x larger commit ~64x dearer per
// entry). The bound is loose because the machine may be shared; the
// benchmark gives the real numbers.
func TestCommitCostScaling(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	ev := kvmtest.NewEventFD(t)
	perEntry := func(n int) float64 {
		c := newCommitBench(ev, n, 2)
		best := time.Duration(1 << 62)
		for range 4 {
			_, _, e, d := c.round(t)
			best = min(best, e+d)
		}
		return float64(best.Nanoseconds()) / float64(2*n)
	}
	small, large := perEntry(1_000), perEntry(64_000)
	t.Logf("commit CPU time per entry: %.0f ns at 1k entries, %.0f ns at 64k (x%.2f)", small, large, large/small)
	if large > 5*small {
		t.Fatalf("per-entry commit cost grows x%.1f from 1k to 64k entries: not O(n log n)", large/small)
	}
}
