package kvmtest

import (
	"fmt"
	"sync"

	"github.com/govmm/govmm/kvm"
)

// faults counts calls and decides which ones fail. Its owner serialises
// access with its own mutex (mu).
type faults struct {
	mu       sync.Mutex
	counts   Counts
	failAt   map[uint64]error
	failFunc func(Call) error
}

// FailCall makes the n-th call from now (1 = the next one) fail with err
// without reaching the kernel (or the fake's model). Several calls can be
// armed at once.
func (f *faults) FailCall(n uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAt == nil {
		f.failAt = make(map[uint64]error)
	}
	f.failAt[f.counts.Calls+n] = err
}

// FailFunc installs fn, called for every call before anything else; a
// non-nil result fails the call with that error. nil removes it.
func (f *faults) FailFunc(fn func(Call) error) {
	f.mu.Lock()
	f.failFunc = fn
	f.mu.Unlock()
}

// ClearFailures disarms every FailCall not yet reached and removes the
// FailFunc.
func (f *faults) ClearFailures() {
	f.mu.Lock()
	clear(f.failAt)
	f.failFunc = nil
	f.mu.Unlock()
}

// Counts returns the call counters.
func (f *faults) Counts() Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// injected counts a new call and returns the failure chosen for it, if
// any. Called with mu held.
func (f *faults) injected(op Op, e kvm.Ioeventfd) error {
	f.counts.Calls++
	n := f.counts.Calls
	if err, ok := f.failAt[n]; ok {
		delete(f.failAt, n)
		return err
	}
	if f.failFunc != nil {
		return f.failFunc(Call{N: n, Op: op, Entry: e})
	}
	return nil
}

// account records the outcome of a call. Called with mu held.
func (f *faults) account(op Op, err error) {
	switch {
	case err != nil:
		f.counts.Failures++
	case op == OpAssign:
		f.counts.Assigns++
	default:
		f.counts.Deassigns++
	}
}

// Injector wraps any kvm.IoeventfdAssigner (typically a real *kvm.VM) and
// fails chosen calls, so rollback paths can be driven against the real
// kernel. Calls it does not fail are passed through unchanged.
type Injector struct {
	inner kvm.IoeventfdAssigner
	faults
}

// Wrap returns an Injector in front of inner.
func Wrap(inner kvm.IoeventfdAssigner) *Injector { return &Injector{inner: inner} }

// AssignIoeventfd implements kvm.IoeventfdAssigner.
func (w *Injector) AssignIoeventfd(e kvm.Ioeventfd) error { return w.call(OpAssign, e) }

// DeassignIoeventfd implements kvm.IoeventfdAssigner.
func (w *Injector) DeassignIoeventfd(e kvm.Ioeventfd) error { return w.call(OpDeassign, e) }

func (w *Injector) call(op Op, e kvm.Ioeventfd) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.injected(op, e)
	if err == nil {
		if op == OpAssign {
			err = w.inner.AssignIoeventfd(e)
		} else {
			err = w.inner.DeassignIoeventfd(e)
		}
	} else {
		err = fmt.Errorf("injected KVM_IOEVENTFD %s failure: %w", op, err)
	}
	w.account(op, err)
	return err
}
