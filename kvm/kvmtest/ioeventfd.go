package kvmtest

import (
	"cmp"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// Op is the kind of a KVM_IOEVENTFD call.
type Op uint8

const (
	OpAssign Op = iota
	OpDeassign
)

func (o Op) String() string {
	if o == OpAssign {
		return "assign"
	}
	return "deassign"
}

// Call describes one call made to a Kernel. N counts calls from 1 over the
// Kernel's life, failed ones included.
type Call struct {
	N     uint64
	Op    Op
	Entry kvm.Ioeventfd
}

// Counts are a Kernel's call counters.
type Counts struct {
	Calls     uint64 // every call
	Assigns   uint64 // successful assigns
	Deassigns uint64 // successful deassigns
	Failures  uint64 // calls that returned an error (injected or not)
}

// Kernel is a fake KVM VM as far as KVM_IOEVENTFD goes. It implements
// kvm.IoeventfdAssigner and is safe for concurrent use.
type Kernel struct {
	// faults' mutex guards every field.
	counting bool
	limit    int
	regs     []registration
	faults
}

// registration is what the kernel keeps per ioeventfd: the eventfd context
// is modelled by the *kvm.EventFD (one per open eventfd).
type registration struct {
	space   kvm.Space
	addr    uint64
	len     uint32
	hasData bool
	data    uint64
	ev      *kvm.EventFD
}

// New returns a fake that enforces the kernel's rules.
func New() *Kernel { return &Kernel{} }

// NewCounting returns a fake that only counts calls: no validation, no
// registered set (Entries is always empty). For benchmarks of callers.
// Injected failures still apply.
func NewCounting() *Kernel { return &Kernel{counting: true} }

// SetLimit makes assigns fail with ENOSPC once n registrations exist (as the
// kernel does when memory or its bus limit runs out). 0 means no limit.
func (k *Kernel) SetLimit(n int) {
	k.mu.Lock()
	k.limit = n
	k.mu.Unlock()
}

// Len returns the number of registrations.
func (k *Kernel) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.regs)
}

// Entries returns the registered set, sorted by space, address, length,
// wildcard before datamatch, datamatch, then the eventfd's current fd number.
// Datamatch is 0 for wildcards.
func (k *Kernel) Entries() []kvm.Ioeventfd {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]kvm.Ioeventfd, len(k.regs))
	for i, r := range k.regs {
		out[i] = kvm.Ioeventfd{Space: r.space, Addr: r.addr, Len: r.len, HasDatamatch: r.hasData, Datamatch: r.data, Event: r.ev}
	}
	slices.SortFunc(out, CompareIoeventfd)
	return out
}

// CompareIoeventfd orders entries as Entries sorts them.
func CompareIoeventfd(a, b kvm.Ioeventfd) int {
	return cmp.Or(
		cmp.Compare(a.Space, b.Space),
		cmp.Compare(a.Addr, b.Addr),
		cmp.Compare(a.Len, b.Len),
		boolCompare(a.HasDatamatch, b.HasDatamatch),
		cmp.Compare(a.Datamatch, b.Datamatch),
		cmp.Compare(fdOf(a.Event), fdOf(b.Event)),
	)
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}

func fdOf(e *kvm.EventFD) int {
	if e == nil {
		return -1
	}
	return e.Fd()
}

// AssignIoeventfd implements kvm.IoeventfdAssigner.
func (k *Kernel) AssignIoeventfd(e kvm.Ioeventfd) error {
	return k.call(OpAssign, e)
}

// DeassignIoeventfd implements kvm.IoeventfdAssigner.
func (k *Kernel) DeassignIoeventfd(e kvm.Ioeventfd) error {
	return k.call(OpDeassign, e)
}

func (k *Kernel) call(op Op, e kvm.Ioeventfd) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	err := k.injected(op, e)
	if err == nil && !k.counting {
		if op == OpAssign {
			err = k.assign(e)
		} else {
			err = k.deassign(e)
		}
	}
	if err != nil {
		err = fmt.Errorf("fake KVM_IOEVENTFD %s %s %#x len %d: %w", op, e.Space, e.Addr, e.Len, err)
	}
	k.account(op, err)
	return err
}

// eventfdOK mirrors eventfd_ctx_fdget: EBADF unless e is an open fd.
func eventfdOK(e *kvm.EventFD) error {
	if e == nil {
		return unix.EBADF
	}
	fd := e.Fd()
	if fd < 0 {
		return unix.EBADF
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return unix.EBADF
	}
	return nil
}

func validSpace(s kvm.Space) bool { return s == kvm.SpaceMMIO || s == kvm.SpacePIO }

// assign follows kvm_assign_ioeventfd: the checks, in the kernel's order.
func (k *Kernel) assign(e kvm.Ioeventfd) error {
	switch e.Len {
	case 0, 1, 2, 4, 8:
	default:
		return unix.EINVAL
	}
	if e.Addr+uint64(e.Len) < e.Addr || !validSpace(e.Space) || (e.Len == 0 && e.HasDatamatch) {
		return unix.EINVAL
	}
	if err := eventfdOK(e.Event); err != nil {
		return err
	}
	r := registration{space: e.Space, addr: e.Addr, len: e.Len, hasData: e.HasDatamatch, ev: e.Event}
	if e.HasDatamatch {
		r.data = e.Datamatch // the kernel does not check that it fits len
	}
	for _, p := range k.regs {
		if collision(p, r) {
			return unix.EEXIST
		}
	}
	if k.limit > 0 && len(k.regs) >= k.limit {
		return unix.ENOSPC
	}
	k.regs = append(k.regs, r)
	return nil
}

// collision is ioeventfd_check_collision: the eventfd plays no part.
func collision(p, r registration) bool {
	return p.space == r.space && p.addr == r.addr &&
		(p.len == 0 || r.len == 0 ||
			(p.len == r.len && (!p.hasData || !r.hasData || p.data == r.data)))
}

// deassign follows kvm_deassign_ioeventfd_idx.
func (k *Kernel) deassign(e kvm.Ioeventfd) error {
	if !validSpace(e.Space) {
		return unix.EINVAL
	}
	if err := eventfdOK(e.Event); err != nil {
		return err
	}
	for i, p := range k.regs {
		if p.space != e.Space || p.ev != e.Event || p.addr != e.Addr || p.len != e.Len || p.hasData != e.HasDatamatch {
			continue
		}
		if p.hasData && p.data != e.Datamatch {
			continue
		}
		k.regs = slices.Delete(k.regs, i, i+1)
		return nil
	}
	return unix.ENOENT
}
