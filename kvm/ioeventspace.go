package kvm

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Errors reported by IoEventSpace. Each is wrapped with the details (the
// entry, the IDs involved), so test them with errors.Is.
var (
	// ErrInvalidIoeventfd: an entry the kernel would reject with EINVAL or
	// EBADF (bad length, datamatch with length 0, datamatch wider than the
	// length, address overflow, unknown space, nil or closed eventfd).
	ErrInvalidIoeventfd = errors.New("invalid ioeventfd")
	// ErrIoeventfdCollision: two entries of one transaction that the
	// kernel's collision check would refuse (EEXIST) to hold together.
	ErrIoeventfdCollision = errors.New("colliding ioeventfds")
	// ErrUnknownIoEvent: Remove or RemoveAndClose of an ID that is not (or
	// no longer) in the space.
	ErrUnknownIoEvent = errors.New("unknown ioeventfd id")
	// ErrTxnDone: a call on an IoEventTxn whose outermost Commit (or
	// Abort) has already ended it.
	ErrTxnDone = errors.New("ioeventfd transaction already ended")
	// ErrSpacePoisoned: a failed commit could not be rolled back, so the
	// kernel's registrations are no longer known. Every later commit fails
	// with this error; the VM should be torn down.
	ErrSpacePoisoned = errors.New("ioeventfd space poisoned: an earlier rollback failed, kernel state unknown")
)

// IoEventEntry is one registration of an IoEventSpace.
type IoEventEntry struct {
	ID    IoEventID
	Entry Ioeventfd
}

// IoEventStats are cumulative counters of an IoEventSpace.
type IoEventStats struct {
	// Commits counts outermost commits that applied pending changes
	// successfully (a commit with nothing pending is not counted).
	Commits uint64
	// Failures counts outermost commits that failed (validation, ioctl
	// error, poisoned space).
	Failures uint64
	// Rollbacks counts failed commits that had issued ioctls and undid them.
	Rollbacks uint64
	// Assigns and Deassigns count the calls made to the assigner (one
	// KVM_IOEVENTFD each), including failed ones and those of rollbacks.
	Assigns   uint64
	Deassigns uint64
	// IoctlTime is the time of the ioctl phases of commits (from the first
	// call to the assigner to the last, rollbacks included); CommitTime the
	// total time of outermost commits. CommitTime - IoctlTime is the space's
	// own (userspace) cost: building, sorting, diffing and validating.
	IoctlTime  time.Duration
	CommitTime time.Duration
	// DiscardedKicks counts guest kicks found pending (and dropped) when
	// RemoveAndClose drained an eventfd before closing it.
	DiscardedKicks uint64
	// CloseErrors counts eventfds whose close after a successful commit
	// failed (the registration itself was removed).
	CloseErrors uint64
}

// IoEventSpace is the transactional set of a VM's ioeventfds. Every
// KVM_IOEVENTFD of govmm goes through one, so that registering the queue
// notifiers of many devices costs one sort and diff instead of one per
// queue, and so that a failure half-way leaves the kernel as it was.
//
// Changes (Add, Remove, RemoveAndClose) are recorded in the desired set and
// reach the kernel at the outermost Commit of a transaction (IoEventTxn,
// opened by Begin; Begin on the transaction nests one level deeper). Add,
// Remove and RemoveAndClose called on the space itself are each a
// transaction of their own, committed at once.
//
// Transactions are owned, and only one is open at a time: Begin waits
// while another caller's transaction is open. QEMU can share one
// transaction depth between all callers because they all hold its big
// lock; govmm has no big lock: virtio transports (each under its own
// mutex), the vhost attacher and its timer goroutine use one space
// independently. With a shared depth a caller's Commit inside another's
// transaction would return nil without applying anything, and a failure of
// the other's commit would silently discard its changes. Owned
// transactions make a Commit's result that of exactly the changes its
// owner staged.
//
// A commit sorts the desired set once (O(n log n)), merge-walks it against
// the committed sorted set, validates the result, then issues all deassigns
// followed by all assigns, one KVM_IOEVENTFD per change. Deassigns come first
// because the kernel's collision check ignores the eventfd: replacing the
// eventfd at one (address, length, datamatch) only works in that order.
// Grouping them also helps on kernels that defer the SRCU grace period of a
// registration (call_srcu, Linux 6.18): a deassign issued right after an
// assign waits for that grace period (several ms), so interleaving the two
// in key order, as QEMU's diff does, can cost a grace period per pair; this
// order pays it at most once per commit.
//
// A failed commit (invalid set, ioctl error) leaves the space exactly as it
// was before the transaction: the ioctls the commit made are undone in
// reverse order, and every change staged in the transaction is discarded
// (no other caller's changes can be pending). IDs returned by Add in the failed
// transaction are then unknown, entries removed in it are still registered,
// and no eventfd is closed. If the undo itself fails the space is poisoned.
//
// The space never takes ownership of an eventfd, except through
// RemoveAndClose. It is safe for concurrent use; its mutex is held across
// the ioctls of a commit. Len, Committed, Stats and Poisoned do not wait
// for an open transaction.
type IoEventSpace struct {
	// txmu is the transaction lock: held from Begin until the
	// transaction's outermost Commit or Abort (possibly released by another
	// goroutine than the one that took it), and by the space's own Add,
	// Remove and RemoveAndClose. Taken before mu.
	txmu sync.Mutex

	mu sync.Mutex
	k  IoeventfdAssigner

	cur      *ioEventTxn // the open transaction, nil if none
	depth    int         // of cur
	dirty    bool        // changes staged since the last outermost commit
	poisoned error       // the rollback failure that poisoned the space
	nextID   IoEventID

	// Every live entry (committed, or added since the last outermost
	// commit) has a slot in records; ids finds it. The sort keys carry the
	// slot, not the eventfd pointer: pointer-free keys sort faster (no
	// write barriers) and are not scanned by the garbage collector.
	records []ioRecord
	free    []uint32 // unused slots of records
	ids     map[IoEventID]uint32
	staged  []uint32 // slots added since the last outermost commit

	committed []ioKey // sorted by compareIoKeys
	// closeAfter holds the eventfds of RemoveAndClose calls, closed after
	// the outermost commit succeeds.
	closeAfter []*EventFD

	// Buffers reused across commits.
	scratch    []ioKey
	dels, adds []ioKey
	// The eventfds of dels and adds, gathered in one pass (records are
	// visited in sort order, which is random memory order).
	delEvs, addEvs []*EventFD

	stats IoEventStats
}

// NewIoEventSpace returns an empty space that registers through k (a *VM,
// or a fake in tests).
func NewIoEventSpace(k IoeventfdAssigner) *IoEventSpace {
	return &IoEventSpace{k: k, ids: make(map[IoEventID]uint32)}
}

// IoEventTxn is a transaction of an IoEventSpace, returned by Begin. It
// holds the space's transaction lock until its outermost Commit or its
// Abort, so its owner must end it on every path. After that every method
// returns ErrTxnDone (Begin returns the ended transaction, whose methods
// then fail). A transaction may be ended by another goroutine than the one
// that began it, but its methods must not be called concurrently.
type IoEventTxn interface {
	// Begin nests one level deeper in the same transaction and returns it;
	// each nested Begin needs its own Commit.
	Begin() IoEventTxn
	// Add, Remove and RemoveAndClose stage a change, as the space's
	// methods of the same name do, for this transaction's commit.
	Add(e Ioeventfd) (IoEventID, error)
	Remove(id IoEventID) error
	RemoveAndClose(id IoEventID) error
	// Commit closes one level. The outermost Commit applies the staged
	// changes (its error is the commit's: see IoEventSpace) and ends the
	// transaction, releasing the space to the next Begin.
	Commit() error
	// Abort discards every change staged in the transaction, at any depth,
	// and ends it: no ioctl is made and no eventfd closed. The enclosing
	// levels' Commits then return ErrTxnDone.
	Abort() error
}

type ioEventTxn struct{ s *IoEventSpace }

// Begin opens a transaction. It waits while another transaction is open
// (the space holds a transaction lock from Begin until that transaction's
// outermost Commit or Abort), so no caller's changes ever join another
// caller's commit. Calling it (or the space's Add, Remove, RemoveAndClose)
// while holding an open transaction of the same space deadlocks: nest with
// the transaction's own Begin instead.
func (s *IoEventSpace) Begin() IoEventTxn {
	s.txmu.Lock()
	t := &ioEventTxn{s: s}
	s.mu.Lock()
	s.cur, s.depth = t, 1
	s.mu.Unlock()
	return t
}

// open locks the space and reports whether t is its open transaction; on
// false the space is unlocked again.
func (t *ioEventTxn) open() bool {
	t.s.mu.Lock()
	if t.s.cur != t {
		t.s.mu.Unlock()
		return false
	}
	return true
}

func (t *ioEventTxn) Begin() IoEventTxn {
	if t.open() {
		t.s.depth++
		t.s.mu.Unlock()
	}
	return t
}

func (t *ioEventTxn) Add(e Ioeventfd) (IoEventID, error) {
	if err := checkIoeventfd(e); err != nil {
		return 0, fmt.Errorf("add ioeventfd: %w", err)
	}
	if !t.open() {
		return 0, fmt.Errorf("add ioeventfd: %w", ErrTxnDone)
	}
	defer t.s.mu.Unlock()
	return t.s.stageAddLocked(e), nil
}

func (t *ioEventTxn) Remove(id IoEventID) error { return t.remove(id, false) }

func (t *ioEventTxn) RemoveAndClose(id IoEventID) error { return t.remove(id, true) }

func (t *ioEventTxn) remove(id IoEventID, closeFD bool) error {
	if !t.open() {
		return fmt.Errorf("remove ioeventfd #%d: %w", id, ErrTxnDone)
	}
	defer t.s.mu.Unlock()
	return t.s.stageRemoveLocked(id, closeFD)
}

func (t *ioEventTxn) Commit() error {
	s := t.s
	if !t.open() {
		return fmt.Errorf("commit ioeventfds: %w", ErrTxnDone)
	}
	s.depth--
	if s.depth > 0 {
		s.mu.Unlock()
		return nil
	}
	err := s.finishLocked()
	s.cur = nil
	s.mu.Unlock()
	s.txmu.Unlock()
	return err
}

func (t *ioEventTxn) Abort() error {
	s := t.s
	if !t.open() {
		return fmt.Errorf("abort ioeventfd transaction: %w", ErrTxnDone)
	}
	s.discardLocked()
	s.cur, s.depth = nil, 0
	s.mu.Unlock()
	s.txmu.Unlock()
	return nil
}

// Add registers e in a transaction of its own and returns its ID. e is
// validated first (length 0, 1, 2, 4 or 8; no datamatch with length 0;
// datamatch fits the length; open eventfd); collisions with other entries
// are checked at commit. Datamatch is ignored (and recorded as 0) when
// HasDatamatch is false. The returned error may be a commit failure. The
// same holds for IoEventTxn.Add, except that the commit comes later.
//
// The caller keeps ownership of e.Event and must keep it open until a
// commit has removed the entry.
func (s *IoEventSpace) Add(e Ioeventfd) (IoEventID, error) {
	if err := checkIoeventfd(e); err != nil {
		return 0, fmt.Errorf("add ioeventfd: %w", err)
	}
	s.txmu.Lock()
	defer s.txmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.stageAddLocked(e)
	if err := s.finishLocked(); err != nil {
		return 0, err
	}
	return id, nil
}

// Remove removes entry id in a transaction of its own; an unknown id is an
// error (ErrUnknownIoEvent). The caller keeps the eventfd, and must keep it
// open until the commit (KVM needs a live fd to deassign). In a
// transaction (IoEventTxn.Remove), an Add and a Remove of the same ID
// cancel out without any ioctl.
func (s *IoEventSpace) Remove(id IoEventID) error {
	return s.remove(id, false)
}

// RemoveAndClose is Remove, and hands the entry's eventfd to the space: it
// is closed right after the outermost commit that removed the entry
// succeeds, never before (closing first would make the deassign fail with
// EBADF). A kick still pending in the eventfd at that point is drained and
// discarded (counted in IoEventStats.DiscardedKicks): the device is going
// away and nothing would process it. A caller that must see such a kick
// uses Remove, commits, drains the eventfd itself and closes it.
//
// If the commit fails (or the transaction is aborted) the eventfd is not
// closed and stays the caller's. The commit refuses (before any ioctl) to
// close an eventfd that another entry of the space still uses.
func (s *IoEventSpace) RemoveAndClose(id IoEventID) error {
	return s.remove(id, true)
}

func (s *IoEventSpace) remove(id IoEventID, closeFD bool) error {
	s.txmu.Lock()
	defer s.txmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stageRemoveLocked(id, closeFD); err != nil {
		return err
	}
	return s.finishLocked()
}

// stageAddLocked records e (already validated) in the desired set.
func (s *IoEventSpace) stageAddLocked(e Ioeventfd) IoEventID {
	s.nextID++
	id := s.nextID
	var slot uint32
	if n := len(s.free); n > 0 {
		slot = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		slot = uint32(len(s.records))
		s.records = append(s.records, ioRecord{})
	}
	s.records[slot] = ioRecord{key: makeKey(id, slot, e), ev: e.Event, desired: true}
	s.ids[id] = slot
	s.staged = append(s.staged, slot)
	s.dirty = true
	return id
}

// stageRemoveLocked takes entry id out of the desired set.
func (s *IoEventSpace) stageRemoveLocked(id IoEventID, closeFD bool) error {
	slot, ok := s.ids[id]
	if !ok || !s.records[slot].desired {
		return fmt.Errorf("remove ioeventfd #%d: %w", id, ErrUnknownIoEvent)
	}
	r := &s.records[slot]
	r.desired = false
	if closeFD {
		s.closeAfter = append(s.closeAfter, r.ev)
	}
	s.dirty = true
	return nil
}

// Len returns the number of committed entries.
func (s *IoEventSpace) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.committed)
}

// Committed returns the committed entries, sorted by (address, space,
// length, datamatch, ID): what the kernel holds, as far as the space knows.
func (s *IoEventSpace) Committed() []IoEventEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]IoEventEntry, len(s.committed))
	for i, x := range s.committed {
		out[i] = IoEventEntry{ID: x.id, Entry: s.arg(x)}
	}
	return out
}

// Stats returns a snapshot of the space's counters.
func (s *IoEventSpace) Stats() IoEventStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Poisoned reports whether a failed rollback has poisoned the space.
func (s *IoEventSpace) Poisoned() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.poisoned != nil
}

// IoEventCommitError is returned when an ioctl fails during a commit. It
// unwraps to the ioctl's error (so errors.Is(err, unix.EEXIST) works) and,
// when the rollback failed too, to that error and ErrSpacePoisoned.
type IoEventCommitError struct {
	Op    string // "assign" or "deassign"
	ID    IoEventID
	Entry Ioeventfd
	Err   error
	// Undone is the number of ioctls the rollback undid.
	Undone int
	// RollbackErr is non-nil when undoing failed; the space is poisoned.
	RollbackErr error
}

func (e *IoEventCommitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "commit ioeventfds: %s %s: %v", e.Op, describeEntry(e.ID, e.Entry), e.Err)
	if e.RollbackErr != nil {
		fmt.Fprintf(&b, "; rollback failed, space poisoned: %v", e.RollbackErr)
	} else {
		fmt.Fprintf(&b, " (rolled back %d ioctls)", e.Undone)
	}
	return b.String()
}

func (e *IoEventCommitError) Unwrap() []error {
	if e.RollbackErr != nil {
		return []error{e.Err, e.RollbackErr, ErrSpacePoisoned}
	}
	return []error{e.Err}
}

// ioRecord is one live entry.
type ioRecord struct {
	key     ioKey
	ev      *EventFD
	desired bool // in the desired set (false: removed, pending commit)
}

// ioKey is the sort and diff key of one entry: address, then meta (space,
// length, wildcard before datamatch), datamatch (0 for a wildcard), ID. IDs
// are unique, so two keys compare equal only for the same entry. slot
// locates the entry's record and plays no part in the order.
type ioKey struct {
	addr uint64
	meta uint64
	data uint64
	id   IoEventID
	slot uint32
}

const (
	metaSpaceShift = 40
	metaLenShift   = 8
)

func makeKey(id IoEventID, slot uint32, e Ioeventfd) ioKey {
	k := ioKey{addr: e.Addr, id: id, slot: slot, meta: uint64(e.Space)<<metaSpaceShift | uint64(e.Len)<<metaLenShift}
	if e.HasDatamatch {
		k.meta |= 1
		k.data = e.Datamatch
	}
	return k
}

func (k ioKey) space() Space   { return Space(k.meta >> metaSpaceShift) }
func (k ioKey) length() uint32 { return uint32(k.meta>>metaLenShift) & 0xff }
func (k ioKey) hasData() bool  { return k.meta&1 != 0 }

// arg returns the Ioeventfd the key stands for, eventfd included.
func (s *IoEventSpace) arg(k ioKey) Ioeventfd {
	return Ioeventfd{Space: k.space(), Addr: k.addr, Len: k.length(), HasDatamatch: k.hasData(), Datamatch: k.data, Event: s.records[k.slot].ev}
}

func (k ioKey) String() string {
	return describeEntry(k.id, Ioeventfd{Space: k.space(), Addr: k.addr, Len: k.length(), HasDatamatch: k.hasData(), Datamatch: k.data})
}

// describeEntry formats an entry without touching its eventfd, which may be
// nil or closed.
func describeEntry(id IoEventID, e Ioeventfd) string {
	if e.HasDatamatch {
		return fmt.Sprintf("#%d (%s %#x len %d datamatch %#x)", id, e.Space, e.Addr, e.Len, e.Datamatch)
	}
	return fmt.Sprintf("#%d (%s %#x len %d any value)", id, e.Space, e.Addr, e.Len)
}

// compareIoKeys orders keys by address, space, length, wildcard before
// datamatch, datamatch, then ID. Entries the kernel could consider
// colliding are therefore adjacent (see collides).
func compareIoKeys(a, b ioKey) int {
	if a.addr != b.addr {
		return cmp.Compare(a.addr, b.addr)
	}
	if a.meta != b.meta {
		return cmp.Compare(a.meta, b.meta)
	}
	if a.data != b.data {
		return cmp.Compare(a.data, b.data)
	}
	return cmp.Compare(a.id, b.id)
}

// collides is the kernel's ioeventfd collision predicate: same bus and
// address, and either one ignores the access length, or both have the same
// length and one is a wildcard or both match the same value. The eventfd is
// not part of it.
//
// In a slice sorted by compareIoKeys a colliding pair exists if and only if
// some adjacent pair collides: the entries of one (address, space) are
// contiguous, a length-0 entry sorts first among them, a wildcard first
// among those of its length, and equal datamatches are neighbours.
func collides(a, b ioKey) bool {
	if a.addr != b.addr || a.space() != b.space() {
		return false
	}
	la, lb := a.length(), b.length()
	if la == 0 || lb == 0 {
		return true
	}
	return la == lb && (!a.hasData() || !b.hasData() || a.data == b.data)
}

// checkIoeventfd validates one entry the way the kernel's assign path does.
func checkIoeventfd(e Ioeventfd) error {
	if e.Space != SpaceMMIO && e.Space != SpacePIO {
		return fmt.Errorf("%w: unknown space %v", ErrInvalidIoeventfd, e.Space)
	}
	switch e.Len {
	case 0, 1, 2, 4, 8:
	default:
		return fmt.Errorf("%w: %s %#x: length %d is not 0, 1, 2, 4 or 8", ErrInvalidIoeventfd, e.Space, e.Addr, e.Len)
	}
	if e.Addr+uint64(e.Len) < e.Addr {
		return fmt.Errorf("%w: %s %#x length %d wraps around the address space", ErrInvalidIoeventfd, e.Space, e.Addr, e.Len)
	}
	if e.HasDatamatch {
		if e.Len == 0 {
			return fmt.Errorf("%w: %s %#x: a datamatch needs a length", ErrInvalidIoeventfd, e.Space, e.Addr)
		}
		if e.Len < 8 && e.Datamatch>>(8*e.Len) != 0 {
			return fmt.Errorf("%w: %s %#x: datamatch %#x does not fit in %d bytes", ErrInvalidIoeventfd, e.Space, e.Addr, e.Datamatch, e.Len)
		}
	}
	if e.Event == nil {
		return fmt.Errorf("%w: %s %#x: no eventfd", ErrInvalidIoeventfd, e.Space, e.Addr)
	}
	if e.Event.Fd() < 0 {
		return fmt.Errorf("%w: %s %#x: %w", ErrInvalidIoeventfd, e.Space, e.Addr, ErrClosed)
	}
	return nil
}

// finishLocked ends the outermost level of a transaction: it applies the
// staged changes.
func (s *IoEventSpace) finishLocked() error {
	if s.poisoned != nil {
		s.discardLocked()
		s.stats.Failures++
		return fmt.Errorf("commit ioeventfds: %w (%v)", ErrSpacePoisoned, s.poisoned)
	}
	if !s.dirty {
		return nil
	}
	start := time.Now()
	err := s.applyLocked()
	s.stats.CommitTime += time.Since(start)
	if err != nil {
		s.discardLocked()
		s.stats.Failures++
		return err
	}
	s.dirty = false
	s.stats.Commits++
	// Removed entries, and entries added and removed in this transaction,
	// are gone for good.
	for _, x := range s.dels {
		s.freeSlot(x.slot)
	}
	for _, slot := range s.staged {
		if !s.records[slot].desired {
			s.freeSlot(slot)
		}
	}
	s.staged = s.staged[:0]
	for _, ev := range s.closeAfter {
		if n, err := ev.Drain(); err == nil {
			s.stats.DiscardedKicks += n
		}
		if err := ev.Close(); err != nil {
			s.stats.CloseErrors++
		}
	}
	clear(s.closeAfter)
	s.closeAfter = s.closeAfter[:0]
	return nil
}

// discardLocked throws away the staged changes: the desired set becomes the
// committed one again and no eventfd will be closed.
func (s *IoEventSpace) discardLocked() {
	for _, slot := range s.staged {
		s.freeSlot(slot)
	}
	s.staged = s.staged[:0]
	for _, x := range s.committed {
		s.records[x.slot].desired = true
	}
	clear(s.closeAfter)
	s.closeAfter = s.closeAfter[:0]
	s.dirty = false
}

func (s *IoEventSpace) freeSlot(slot uint32) {
	delete(s.ids, s.records[slot].key.id)
	s.records[slot] = ioRecord{}
	s.free = append(s.free, slot)
}

// applyLocked makes the kernel hold the desired set. On success the desired
// set (sorted) becomes the committed one; on failure nothing changes (or the
// space is poisoned).
func (s *IoEventSpace) applyLocked() error {
	want := slices.Grow(s.scratch[:0], len(s.ids))
	for i := range s.records {
		if r := &s.records[i]; r.desired {
			want = append(want, r.key)
		}
	}
	slices.SortFunc(want, compareIoKeys)
	s.scratch = want

	for i := 1; i < len(want); i++ {
		if collides(want[i-1], want[i]) {
			return fmt.Errorf("commit ioeventfds: %w: %v and %v", ErrIoeventfdCollision, want[i-1], want[i])
		}
	}

	// Merge-walk: entries only in the committed set go, entries only in the
	// desired set come.
	have := s.committed
	dels, adds := slices.Grow(s.dels[:0], len(have)), slices.Grow(s.adds[:0], len(want))
	i, j := 0, 0
	for i < len(have) || j < len(want) {
		c := 0
		switch {
		case i == len(have):
			c = 1
		case j == len(want):
			c = -1
		default:
			c = compareIoKeys(have[i], want[j])
		}
		switch {
		case c < 0:
			dels = append(dels, have[i])
			i++
		case c > 0:
			adds = append(adds, want[j])
			j++
		default:
			i++
			j++
		}
	}
	s.dels, s.adds = dels, adds
	defer func() {
		clear(s.delEvs)
		clear(s.addEvs)
	}()
	if err := s.checkEventsLocked(want); err != nil {
		return err
	}
	delEvs, addEvs := s.delEvs, s.addEvs

	// The ioctl phase is timed as a whole: reading the clock around each
	// call would cost more than the space's own work per entry.
	start := time.Now()
	defer func() { s.stats.IoctlTime += time.Since(start) }()
	for n, x := range dels {
		if err := s.call(false, x, delEvs[n]); err != nil {
			return s.rollbackLocked("deassign", x, err, 0, n)
		}
	}
	for n, x := range adds {
		if err := s.call(true, x, addEvs[n]); err != nil {
			return s.rollbackLocked("assign", x, err, n, len(dels))
		}
	}
	s.committed, s.scratch = want, s.committed
	return nil
}

// checkEventsLocked gathers the eventfds of s.dels and s.adds into
// s.delEvs and s.addEvs, and refuses, before any ioctl, a commit that would
// pass a closed eventfd to the kernel or close an eventfd that stays in use.
func (s *IoEventSpace) checkEventsLocked(want []ioKey) error {
	gather := func(keys []ioKey, evs []*EventFD) ([]*EventFD, error) {
		evs = evs[:0]
		for _, x := range keys {
			ev := s.records[x.slot].ev
			if ev.Fd() < 0 {
				return evs, fmt.Errorf("commit ioeventfds: %v: %w: %w (closed before the commit that removes it)", x, ErrInvalidIoeventfd, ErrClosed)
			}
			evs = append(evs, ev)
		}
		return evs, nil
	}
	var err error
	if s.delEvs, err = gather(s.dels, s.delEvs); err != nil {
		return err
	}
	if s.addEvs, err = gather(s.adds, s.addEvs); err != nil {
		return err
	}
	if len(s.closeAfter) == 0 {
		return nil
	}
	closing := make(map[*EventFD]struct{}, len(s.closeAfter))
	for _, ev := range s.closeAfter {
		closing[ev] = struct{}{}
	}
	for _, x := range want {
		if _, ok := closing[s.records[x.slot].ev]; ok {
			return fmt.Errorf("commit ioeventfds: %w: RemoveAndClose of an eventfd that %v still uses", ErrInvalidIoeventfd, x)
		}
	}
	return nil
}

// call issues one assign or deassign and accounts for it.
func (s *IoEventSpace) call(assign bool, x ioKey, ev *EventFD) error {
	e := Ioeventfd{Space: x.space(), Addr: x.addr, Len: x.length(), HasDatamatch: x.hasData(), Datamatch: x.data, Event: ev}
	if assign {
		s.stats.Assigns++
		return s.k.AssignIoeventfd(e)
	}
	s.stats.Deassigns++
	return s.k.DeassignIoeventfd(e)
}

// rollbackLocked undoes, newest first, the first nAdded assigns of s.adds
// and then the first nRemoved deassigns of s.dels, and builds the commit
// error for the failure of op on x. A deassign that finds the entry gone
// (ENOENT) counts as undone.
func (s *IoEventSpace) rollbackLocked(op string, x ioKey, cause error, nAdded, nRemoved int) error {
	s.stats.Rollbacks++
	cerr := &IoEventCommitError{Op: op, ID: x.id, Entry: s.arg(x), Err: cause}
	var errs []error
	for n := nAdded - 1; n >= 0; n-- {
		if err := s.call(false, s.adds[n], s.addEvs[n]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("undo assign %v: %w", s.adds[n], err))
			continue
		}
		cerr.Undone++
	}
	for n := nRemoved - 1; n >= 0; n-- {
		if err := s.call(true, s.dels[n], s.delEvs[n]); err != nil {
			errs = append(errs, fmt.Errorf("undo deassign %v: %w", s.dels[n], err))
			continue
		}
		cerr.Undone++
	}
	if len(errs) > 0 {
		cerr.RollbackErr = errors.Join(errs...)
		s.poisoned = cerr.RollbackErr
	}
	return cerr
}
