package vhostnet

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// refillIRQ is the control queue's interrupt; while armed it puts every
// answered chain back on the available ring (a driver that keeps the queue
// full). The worker raises it on its own goroutine, the only one touching
// the driver meanwhile.
type refillIRQ struct {
	d       *vt.Driver
	armed   atomic.Bool
	signals atomic.Int64
	err     error
}

func (r *refillIRQ) Signal(uint32) error {
	r.signals.Add(1)
	if r.err != nil {
		return r.err
	}
	if !r.armed.Load() {
		return nil
	}
	for {
		u, ok := r.d.GetUsed()
		if !ok {
			break
		}
		r.d.AddHead(uint16(u.ID))
	}
	r.d.Publish()
	return nil
}

// ctrlEnv is a control worker over a test driver holding n
// VQ_PAIRS_SET 1 requests.
type ctrlEnv struct {
	d     *vt.Driver
	irq   *refillIRQ
	w     *ctrlWorker
	mu    sync.Mutex
	fails []error
}

func newCtrlEnv(t *testing.T, n int, irqErr error) *ctrlEnv {
	t.Helper()
	mem, err := vt.NewMemory(0x10000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	d, err := vt.NewDriver(mem, 16)
	if err != nil {
		t.Fatal(err)
	}
	q, err := d.Queue(virtio.FeatureVersion1)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := d.AddChain(vt.Readable([]byte{ctrlClassMQ, ctrlMQPairsSet, 1, 0}), vt.Writable(1)); err != nil {
			t.Fatal(err)
		}
	}
	d.Publish()
	e := &ctrlEnv{d: d, irq: &refillIRQ{d: d, err: irqErr}}
	e.irq.armed.Store(irqErr == nil)
	e.w = &ctrlWorker{
		q: q, features: virtio.FeatureVersion1 | netFMQ, maxPairs: 1, irq: e.irq,
		fail: func(err error) {
			e.mu.Lock()
			e.fails = append(e.fails, err)
			e.mu.Unlock()
		},
		setPairs: func(int) error { return nil },
	}
	return e
}

func (e *ctrlEnv) failures() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.fails...)
}

// A driver resubmitting requests as fast as they are answered cannot keep
// stop from ending the worker.
func TestCtrlWorkerStopsWhileRefilled(t *testing.T) {
	e := newCtrlEnv(t, 4, nil)
	startCtrl(e.w)
	for start := time.Now(); e.irq.signals.Load() < 500; {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("control queue not served (%d answers)", e.irq.signals.Load())
		}
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() {
		e.w.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		e.irq.armed.Store(false) // let the worker run dry, then fail
		<-stopped
		t.Fatal("stop did not end the worker while the driver kept the queue full")
	}
	if f := e.failures(); len(f) != 0 {
		t.Errorf("worker failed: %v", f)
	}
}

// A failing interrupt is reported (the device needs a reset) and ends
// the pass, as a broken ring does.
func TestCtrlWorkerInterruptError(t *testing.T) {
	errIRQ := errors.New("interrupt line gone")
	e := newCtrlEnv(t, 3, errIRQ)
	startCtrl(e.w)
	deadline := time.Now().Add(5 * time.Second)
	for len(e.failures()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	e.w.stop()
	f := e.failures()
	if len(f) != 1 || !errors.Is(f[0], errIRQ) {
		t.Fatalf("failures %v, want one wrapping %v", f, errIRQ)
	}
	if n := e.irq.signals.Load(); n != 1 {
		t.Errorf("%d interrupts, want 1 (the pass ends at the failure)", n)
	}
}
