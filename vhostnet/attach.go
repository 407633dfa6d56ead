package vhostnet

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/virtio"
)

// IoEvents is the ioeventfd registry the Attacher registers notifiers
// with; *kvm.IoEventSpace implements it. Begin opens a transaction owned
// by the Attacher (it waits while a virtio transport's is open, so the
// two never share a commit); a failed commit or an Abort discards what
// the transaction staged, and RemoveAndClose closes the eventfd only after
// the commit that removed the entry succeeded.
type IoEvents interface {
	Begin() kvm.IoEventTxn
}

// CommitMode says how the Attacher groups notifier (de)registrations into
// ioeventfd commits.
type CommitMode int

const (
	// CommitBatched: one commit registers every queue of every device of
	// an attach, one deregisters them all at detach. govmm's mode.
	CommitBatched CommitMode = iota
	// CommitPerQueue: one commit per queue, as QEMU did before it batched
	// vhost-net host notifiers (9.2). Only for comparison (bench attach).
	CommitPerQueue
)

func (m CommitMode) String() string {
	switch m {
	case CommitBatched:
		return "batched"
	case CommitPerQueue:
		return "per-queue"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// DefaultCoalesce is how long the Attacher waits, after a device asks to
// be restarted or stopped on its own (backend reconnect or hang-up), for
// other devices to ask too, so that one commit covers them all (a backend
// process serving several devices restarts them all at once).
const DefaultCoalesce = 10 * time.Millisecond

// AttacherConfig configures an Attacher.
type AttacherConfig struct {
	// IoEvents is the VM's ioeventfd space. Required.
	IoEvents IoEvents
	// Mode groups registrations; the zero value is CommitBatched.
	Mode CommitMode
	// Coalesce is the window of DefaultCoalesce; 0 means the default, a
	// negative value no waiting.
	Coalesce time.Duration
	// Logger receives attach failures. nil: discard.
	Logger *slog.Logger
}

// OpResult is the outcome of one attach or detach for one device.
type OpResult struct {
	// Err is nil on success. An attach that failed has unwound everything
	// it set up.
	Err error
	// Notifiers is the number of queue notifiers (ioeventfds) the device
	// had registered or deregistered.
	Notifiers int
	// Commits is the number of ioeventfd commits that carried the
	// device's notifiers.
	Commits int
	// NotifierTime is the operation's notifier phase: creating the
	// eventfds and registering them (attach), or deregistering, draining
	// and closing them (detach). It is shared by every device of the
	// operation.
	NotifierTime time.Duration
	// BackendTime is the operation's backend-messaging phase (the devices
	// are messaged in parallel, so it is shared too).
	BackendTime time.Duration
	// Skipped: the device had nothing to do (not started, or no backend
	// connected); nothing happened.
	Skipped bool
}

// Total is the whole operation's time.
func (r OpResult) Total() time.Duration { return r.NotifierTime + r.BackendTime }

// AttacherStats are cumulative counters of an Attacher.
type AttacherStats struct {
	Attaches, Detaches     uint64 // operations that did something
	AttachCommits          uint64 // ioeventfd commits made by attaches (including unwinds)
	DetachCommits          uint64 // ioeventfd commits made by detaches
	AttachNotifierTime     time.Duration
	AttachBackendTime      time.Duration
	DetachNotifierTime     time.Duration
	DetachBackendTime      time.Duration
	Failures               uint64 // device attaches that failed (and were unwound)
	Registered             int    // notifiers registered now
	Stale                  int    // notifiers whose deregistration failed, retried at the next operation
	StaleRetries           uint64
	DevicesAttached        int // devices attached now
	LastAttach, LastDetach OpResult
}

// unit is a device as the Attacher sees it. The Attacher serialises all
// calls for all units (its operation lock) and never holds a device's own
// locks; a unit never calls the Attacher from these methods.
type unit interface {
	// plan returns the doorbells to register for a start, or false when
	// the device has nothing to start now (not activated, no backend, or
	// already attached).
	plan() ([]virtio.NotifySpec, bool)
	// start hands the registered notifiers (kicks[i] for specs[i]) and
	// the rest of the queue state to the backend. On error the Attacher
	// calls stop and then deregisters the notifiers.
	start(kicks []*kvm.EventFD) error
	// stop stops the backend's queues (before the notifiers go away).
	stop()
	// attached and detached report each operation's outcome (also for
	// deferred ones, whose caller got no result).
	attached(r OpResult)
	detached(r OpResult)
}

// registration is a unit's notifiers while it is attached.
type registration struct {
	ids []kvm.IoEventID
	evs []*kvm.EventFD
}

// Attacher is the attach/detach path of vhost-backed devices: it
// registers the queue notifiers of every device that starts together in
// one ioeventfd commit, then hands them to the backends as kick eventfds;
// detach stops the backends, deregisters every notifier in one commit,
// and drains and closes them. A failure unwinds exactly what was set up
// for the device concerned: its eventfds are closed, its registrations
// removed, and it is reported to the device (which sets NEEDS_RESET); the
// other devices of the operation are not affected, and the VM keeps
// running.
//
// Operations are serialised. Inside Batch, device starts and stops are
// collected and applied together when the outermost Batch returns; a
// device reconnecting to its backend is restarted after a short
// coalescing window shared with the other devices reconnecting then.
type Attacher struct {
	io       IoEvents
	mode     CommitMode
	coalesce time.Duration
	log      *slog.Logger

	op    sync.Mutex // one operation at a time; guards regs, stale, stats
	regs  map[unit]*registration
	stale []staleEntry
	stats AttacherStats

	mu       sync.Mutex // batch and coalescing state
	depth    int
	bStarts  []unit
	bStops   []unit
	soonSt   []soonReq
	soonSp   []soonReq
	timerSet bool
	closed   bool
	flushes  sync.WaitGroup
}

type staleEntry struct {
	id kvm.IoEventID
	ev *kvm.EventFD
}

type soonReq struct {
	u    unit
	done chan error
}

// NewAttacher returns an Attacher registering through cfg.IoEvents.
func NewAttacher(cfg AttacherConfig) (*Attacher, error) {
	if cfg.IoEvents == nil {
		return nil, errors.New("vhost attacher: no ioeventfd space")
	}
	a := &Attacher{io: cfg.IoEvents, mode: cfg.Mode, coalesce: cfg.Coalesce, log: cfg.Logger, regs: map[unit]*registration{}}
	if a.coalesce == 0 {
		a.coalesce = DefaultCoalesce
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a, nil
}

// Mode returns the commit mode.
func (a *Attacher) Mode() CommitMode {
	a.op.Lock()
	defer a.op.Unlock()
	return a.mode
}

// SetMode changes the commit mode (bench attach compares them on the same
// devices). It fails while any device is attached.
func (a *Attacher) SetMode(m CommitMode) error {
	a.op.Lock()
	defer a.op.Unlock()
	if len(a.regs) > 0 || len(a.stale) > 0 {
		return fmt.Errorf("vhost attacher: change mode with %d devices attached", len(a.regs))
	}
	a.mode = m
	return nil
}

// Stats returns a snapshot of the counters.
func (a *Attacher) Stats() AttacherStats {
	a.op.Lock()
	defer a.op.Unlock()
	s := a.stats
	s.Stale = len(a.stale)
	s.DevicesAttached = len(a.regs)
	return s
}

// Batch runs fn, during which device starts (DRIVER_OK) and stops
// (reset) are collected instead of applied; when the outermost Batch
// returns they are applied: all stops in one detach, then all starts in
// one attach. Devices learn the outcome through their own reporting (a
// failed start sets NEEDS_RESET). Inside a Batch a device's Reset returns
// before its backend has stopped; the backend is stopped before Batch
// returns. Batches nest.
func (a *Attacher) Batch(fn func()) {
	a.mu.Lock()
	a.depth++
	a.mu.Unlock()
	defer a.endBatch()
	fn()
}

func (a *Attacher) endBatch() {
	a.mu.Lock()
	a.depth--
	if a.depth > 0 {
		a.mu.Unlock()
		return
	}
	stops, starts := a.bStops, a.bStarts
	a.bStops, a.bStarts = nil, nil
	a.mu.Unlock()
	if len(stops) > 0 {
		a.detach(stops)
	}
	if len(starts) > 0 {
		a.attach(starts)
	}
}

// start attaches u now, or at the end of the current Batch (then it
// returns nil and the outcome goes to u.attached).
func (a *Attacher) start(u unit) error {
	a.mu.Lock()
	if a.depth > 0 {
		a.bStarts = append(a.bStarts, u)
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	return a.attach([]unit{u})[0]
}

// stop detaches u now, or at the end of the current Batch (cancelling a
// start of u still pending in it).
func (a *Attacher) stop(u unit) {
	a.mu.Lock()
	if a.depth > 0 {
		for i, s := range a.bStarts {
			if s == u {
				a.bStarts = append(a.bStarts[:i], a.bStarts[i+1:]...)
				break
			}
		}
		a.bStops = append(a.bStops, u)
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	a.detach([]unit{u})
}

// startSoon and stopSoon queue u for an attach or detach applied after
// the coalescing window, together with every other unit queued by then;
// the returned channel receives u's result.
func (a *Attacher) startSoon(u unit) <-chan error { return a.soon(u, true) }
func (a *Attacher) stopSoon(u unit) <-chan error  { return a.soon(u, false) }

func (a *Attacher) soon(u unit, start bool) <-chan error {
	done := make(chan error, 1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		done <- errors.New("vhost attacher closed")
		return done
	}
	r := soonReq{u: u, done: done}
	if start {
		a.soonSt = append(a.soonSt, r)
	} else {
		a.soonSp = append(a.soonSp, r)
	}
	if !a.timerSet {
		a.timerSet = true
		a.flushes.Add(1)
		wait := max(a.coalesce, 0)
		time.AfterFunc(wait, a.flushSoon)
	}
	return done
}

func (a *Attacher) flushSoon() {
	defer a.flushes.Done()
	a.mu.Lock()
	stops, starts := a.soonSp, a.soonSt
	a.soonSp, a.soonSt = nil, nil
	a.timerSet = false
	a.mu.Unlock()
	if len(stops) > 0 {
		us := make([]unit, len(stops))
		for i, r := range stops {
			us[i] = r.u
		}
		a.detach(us)
		for _, r := range stops {
			r.done <- nil
		}
	}
	if len(starts) > 0 {
		us := make([]unit, len(starts))
		for i, r := range starts {
			us[i] = r.u
		}
		errs := a.attach(us)
		for i, r := range starts {
			r.done <- errs[i]
		}
	}
}

// Close waits for queued operations, detaches every device still attached
// (one commit), and retries stale deregistrations. The Attacher must not
// be used afterwards.
func (a *Attacher) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.flushes.Wait()
	a.op.Lock()
	var us []unit
	for u := range a.regs {
		us = append(us, u)
	}
	a.op.Unlock()
	if len(us) > 0 {
		a.detach(us)
	}
	a.op.Lock()
	defer a.op.Unlock()
	if err := a.retryStaleLocked(); err != nil {
		return fmt.Errorf("vhost attacher close: %d notifiers could not be deregistered: %w", len(a.stale), err)
	}
	return nil
}

// attachJob is one unit's part of an attach.
type attachJob struct {
	u       unit
	specs   []virtio.NotifySpec
	evs     []*kvm.EventFD
	ids     []kvm.IoEventID
	commits int
	err     error
	skipped bool
}

// attach attaches units in one operation and returns each one's error.
func (a *Attacher) attach(units []unit) []error {
	a.op.Lock()
	defer a.op.Unlock()
	if err := a.retryStaleLocked(); err != nil {
		a.log.Warn("vhost attach: stale notifiers still registered", "count", len(a.stale), "err", err)
	}
	jobs := make([]*attachJob, len(units))
	for i, u := range units {
		j := &attachJob{u: u}
		jobs[i] = j
		if a.regs[u] != nil {
			j.skipped = true // already attached
			continue
		}
		specs, ok := u.plan()
		if !ok || len(specs) == 0 {
			j.skipped = true
			continue
		}
		j.specs = specs
	}

	// Notifier phase: eventfds, then registration.
	t0 := time.Now()
	for _, j := range jobs {
		if j.skipped {
			continue
		}
		for _, s := range j.specs {
			ev, err := kvm.NewEventFD()
			if err != nil {
				j.fail(fmt.Errorf("queue %d notifier: %w", s.Queue, err))
				break
			}
			j.evs = append(j.evs, ev)
		}
	}
	if a.mode == CommitPerQueue {
		for _, j := range jobs {
			a.registerPerQueueLocked(j)
		}
	} else {
		a.registerBatchedLocked(jobs)
	}
	t1 := time.Now()

	// Backend phase: every device's backend is messaged in parallel.
	var live []*attachJob
	for _, j := range jobs {
		if !j.skipped && j.err == nil {
			live = append(live, j)
		}
	}
	parallel(len(live), func(i int) {
		j := live[i]
		if err := j.u.start(j.evs); err != nil {
			j.err = err
		}
	})
	t2 := time.Now()

	// Unwind the devices whose backend failed: stop what started, then
	// one commit deregisters all their notifiers.
	var failed []*attachJob
	for _, j := range live {
		if j.err != nil {
			failed = append(failed, j)
		}
	}
	if len(failed) > 0 {
		parallel(len(failed), func(i int) { failed[i].u.stop() })
		regs := make([]*registration, len(failed))
		for i, j := range failed {
			regs[i] = &registration{ids: j.ids, evs: j.evs}
		}
		n := a.deregisterLocked(regs)
		a.stats.AttachCommits += uint64(n)
		for _, j := range failed {
			j.commits += n
			j.ids, j.evs = nil, nil
		}
	}

	errs := make([]error, len(jobs))
	did := false
	for i, j := range jobs {
		r := OpResult{Err: j.err, Skipped: j.skipped}
		if !j.skipped {
			did = true
			r.Notifiers, r.Commits = len(j.specs), j.commits
			r.NotifierTime, r.BackendTime = t1.Sub(t0), t2.Sub(t1)
			if j.err == nil {
				a.regs[j.u] = &registration{ids: j.ids, evs: j.evs}
				a.stats.Registered += len(j.ids)
			} else {
				a.stats.Failures++
				r.Err = fmt.Errorf("vhost attach: %w", j.err)
				a.log.Warn("vhost attach failed", "err", j.err)
			}
			a.stats.LastAttach = r
		}
		errs[i] = r.Err
		j.u.attached(r)
	}
	if did {
		a.stats.Attaches++
		a.stats.AttachNotifierTime += t1.Sub(t0)
		a.stats.AttachBackendTime += t2.Sub(t1)
		a.log.Debug("vhost attach", "devices", len(live), "failed", len(failed), "mode", a.mode,
			"notifier_phase", t1.Sub(t0), "backend_phase", t2.Sub(t1))
	}
	return errs
}

// fail records err and closes the job's eventfds (none is registered).
func (j *attachJob) fail(err error) {
	if j.err == nil {
		j.err = err
	}
	for _, ev := range j.evs {
		ev.Close()
	}
	j.evs = nil
}

// stage adds j's entries to tx. On a validation error it withdraws what
// it added (an Add and a Remove in one transaction cancel out) and fails
// j.
func (a *Attacher) stageLocked(tx kvm.IoEventTxn, j *attachJob) {
	for i, s := range j.specs {
		id, err := tx.Add(s.Ioeventfd(j.evs[i]))
		if err != nil {
			for _, id := range j.ids {
				tx.Remove(id)
			}
			j.ids = nil
			j.fail(fmt.Errorf("register queue %d notifier: %w", s.Queue, err))
			return
		}
		j.ids = append(j.ids, id)
	}
}

// registerBatchedLocked registers every live job's notifiers in one
// commit. If that commit fails (nothing was registered), each job is
// retried alone so that only the culprit fails.
func (a *Attacher) registerBatchedLocked(jobs []*attachJob) {
	var live []*attachJob
	for _, j := range jobs {
		if !j.skipped && j.err == nil {
			live = append(live, j)
		}
	}
	if len(live) == 0 {
		return
	}
	tx := a.io.Begin()
	for _, j := range live {
		a.stageLocked(tx, j)
	}
	err := tx.Commit()
	a.stats.AttachCommits++
	var staged []*attachJob
	for _, j := range live {
		if j.err == nil {
			j.commits++
			staged = append(staged, j)
		}
	}
	if err == nil {
		return
	}
	// The failed commit dropped every staged Add; the eventfds are ours.
	for _, j := range staged {
		j.ids = nil
	}
	if len(staged) == 1 {
		staged[0].fail(fmt.Errorf("register %d queue notifiers: %w", len(staged[0].specs), err))
		return
	}
	a.log.Warn("vhost attach: batched notifier commit failed, registering devices one by one", "devices", len(staged), "err", err)
	for _, j := range staged {
		tx := a.io.Begin()
		a.stageLocked(tx, j)
		if j.err != nil {
			tx.Abort()
			continue
		}
		err := tx.Commit()
		a.stats.AttachCommits++
		j.commits++
		if err != nil {
			j.ids = nil
			j.fail(fmt.Errorf("register %d queue notifiers: %w", len(j.specs), err))
		}
	}
}

// registerPerQueueLocked registers j's notifiers one commit each. On a
// failure the ones already registered are deregistered.
func (a *Attacher) registerPerQueueLocked(j *attachJob) {
	if j.skipped || j.err != nil {
		return
	}
	for i, s := range j.specs {
		tx := a.io.Begin()
		id, err := tx.Add(s.Ioeventfd(j.evs[i]))
		if err != nil {
			tx.Abort()
		} else {
			err = tx.Commit()
			a.stats.AttachCommits++
			j.commits++
		}
		if err != nil {
			done := &registration{ids: j.ids, evs: j.evs[:len(j.ids)]}
			rest := j.evs[len(j.ids):]
			j.commits += a.deregisterLocked([]*registration{done})
			j.ids, j.evs = nil, rest
			j.fail(fmt.Errorf("register queue %d notifier: %w", s.Queue, err))
			return
		}
		j.ids = append(j.ids, id)
	}
}

// deregisterLocked removes regs' notifiers (one commit, or one per queue
// in CommitPerQueue mode) and has the space drain and close their
// eventfds after the commit. Entries whose commit failed stay registered,
// and open, in a.stale, retried at the next operation. It returns the
// number of commits made.
func (a *Attacher) deregisterLocked(regs []*registration) int {
	n := 0
	if a.mode == CommitPerQueue {
		for _, r := range regs {
			for i, id := range r.ids {
				tx := a.io.Begin()
				if err := tx.RemoveAndClose(id); err != nil {
					tx.Abort()
					a.log.Warn("vhost detach: unknown notifier", "id", id, "err", err)
					r.evs[i].Close()
					continue
				}
				err := tx.Commit()
				n++
				if err != nil {
					a.stale = append(a.stale, staleEntry{id: id, ev: r.evs[i]})
				}
			}
		}
		return n
	}
	total := 0
	tx := a.io.Begin()
	for _, r := range regs {
		for i, id := range r.ids {
			if err := tx.RemoveAndClose(id); err != nil {
				// Unknown to the space, so not registered: just close.
				a.log.Warn("vhost detach: unknown notifier", "id", id, "err", err)
				r.evs[i].Close()
				continue
			}
			total++
		}
	}
	err := tx.Commit()
	if total > 0 {
		n++
	}
	if err != nil {
		a.log.Warn("vhost detach: deregistration commit failed; notifiers stay registered and will be retried", "count", total, "err", err)
		for _, r := range regs {
			for i, id := range r.ids {
				if r.evs[i].Fd() >= 0 {
					a.stale = append(a.stale, staleEntry{id: id, ev: r.evs[i]})
				}
			}
		}
	}
	return n
}

// retryStaleLocked retries deregistering stale entries in one commit.
func (a *Attacher) retryStaleLocked() error {
	if len(a.stale) == 0 {
		return nil
	}
	a.stats.StaleRetries++
	tx := a.io.Begin()
	var keep []staleEntry
	for _, s := range a.stale {
		if err := tx.RemoveAndClose(s.id); err != nil {
			s.ev.Close() // unknown: not registered
			continue
		}
		keep = append(keep, s)
	}
	if err := tx.Commit(); err != nil {
		a.stale = keep
		return err
	}
	a.stale = nil
	return nil
}

// detach detaches units in one operation.
func (a *Attacher) detach(units []unit) {
	a.op.Lock()
	defer a.op.Unlock()
	if err := a.retryStaleLocked(); err != nil {
		a.log.Warn("vhost detach: stale notifiers still registered", "count", len(a.stale), "err", err)
	}
	var live []unit
	var regs []*registration
	seen := map[unit]bool{}
	for _, u := range units {
		if r := a.regs[u]; r != nil && !seen[u] {
			seen[u] = true
			live = append(live, u)
			regs = append(regs, r)
		}
	}
	t0 := time.Now()
	parallel(len(live), func(i int) { live[i].stop() })
	t1 := time.Now()
	n := 0
	if len(regs) > 0 {
		n = a.deregisterLocked(regs)
	}
	t2 := time.Now()
	res := map[unit]OpResult{}
	for i, u := range live {
		delete(a.regs, u)
		a.stats.Registered -= len(regs[i].ids)
		commits := n
		if a.mode == CommitPerQueue {
			commits = len(regs[i].ids)
		}
		r := OpResult{Notifiers: len(regs[i].ids), Commits: commits, NotifierTime: t2.Sub(t1), BackendTime: t1.Sub(t0)}
		res[u] = r
		a.stats.LastDetach = r
	}
	if len(live) > 0 {
		a.stats.Detaches++
		a.stats.DetachCommits += uint64(n)
		a.stats.DetachNotifierTime += t2.Sub(t1)
		a.stats.DetachBackendTime += t1.Sub(t0)
		a.log.Debug("vhost detach", "devices", len(live), "commits", n, "mode", a.mode,
			"backend_phase", t1.Sub(t0), "notifier_phase", t2.Sub(t1))
	}
	done := map[unit]bool{}
	for _, u := range units {
		if done[u] {
			continue
		}
		done[u] = true
		r, ok := res[u]
		if !ok {
			r.Skipped = true
		}
		u.detached(r)
	}
}

// parallel runs fn(0..n-1), concurrently when n > 1, and waits.
func parallel(n int, fn func(i int)) {
	if n == 1 {
		fn(0)
		return
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}
