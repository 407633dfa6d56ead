package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Queue errors. Configuration errors come from Init; the others from Pop
// (wrapped in a *ChainError when a descriptor is at fault) and leave the
// queue broken. Test them with errors.Is.
var (
	// ErrQueueNotReady: Pop, Push or a ring operation on a queue that has
	// not been Init'ed (or was Reset).
	ErrQueueNotReady = errors.New("virtqueue not ready")
	// ErrQueueSize: the size is 0, not a power of two, or above the
	// queue's maximum.
	ErrQueueSize = errors.New("invalid virtqueue size")
	// ErrQueueAlign: a ring address breaks the split ring's alignment
	// (descriptor table 16, available ring 2, used ring 4).
	ErrQueueAlign = errors.New("misaligned virtqueue ring")
	// ErrAvailIdxJump: avail.idx moved more than the queue size past the
	// last index the device consumed.
	ErrAvailIdxJump = errors.New("available index moved more than the queue size")
	// ErrHeadIndex: an available-ring entry names a descriptor >= size (also
	// returned by Push for a head the device never popped).
	ErrHeadIndex = errors.New("descriptor head index out of range")
	// ErrNextIndex: a descriptor's next field is outside its table.
	ErrNextIndex = errors.New("descriptor next index out of range")
	// ErrChainTooLong: a chain visits more descriptors than its table holds:
	// a loop, since a loop-free chain cannot.
	ErrChainTooLong = errors.New("descriptor chain longer than its table (loop)")
	// ErrBufferOutOfBounds: a buffer is not inside guest memory (it also
	// unwraps to ErrOutOfBounds).
	ErrBufferOutOfBounds = errors.New("descriptor buffer outside guest memory")
	// ErrWriteOrder: a device-readable descriptor follows a device-writable
	// one.
	ErrWriteOrder = errors.New("readable descriptor after a writable one")
	// ErrIndirectNotNegotiated: an INDIRECT descriptor without
	// VIRTIO_RING_F_INDIRECT_DESC.
	ErrIndirectNotNegotiated = errors.New("indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC")
	// ErrNestedIndirect: an INDIRECT descriptor inside an indirect table.
	ErrNestedIndirect = errors.New("indirect descriptor inside an indirect table")
	// ErrIndirectNext: an INDIRECT descriptor that also has NEXT set.
	ErrIndirectNext = errors.New("indirect descriptor with NEXT set")
	// ErrIndirectLen: an indirect table length that is 0, not a multiple
	// of 16, or above QueueSizeMax descriptors.
	ErrIndirectLen = errors.New("invalid indirect table length")
	// ErrIndirectOutOfBounds: an indirect table not inside one guest memory
	// region (it also unwraps to ErrOutOfBounds).
	ErrIndirectOutOfBounds = errors.New("indirect table outside guest memory")
)

// ChainError is a descriptor chain the device refused. It unwraps to one of
// the queue errors above (and, for memory errors, to the *AccessError).
type ChainError struct {
	Head     uint16 // head of the chain (index in the descriptor table)
	Desc     uint16 // offending descriptor (in the indirect table if Indirect)
	Indirect bool
	Err      error
}

func (e *ChainError) Error() string {
	where := "descriptor"
	if e.Indirect {
		where = "indirect descriptor"
	}
	return fmt.Sprintf("virtqueue chain at head %d, %s %d: %v", e.Head, where, e.Desc, e.Err)
}

func (e *ChainError) Unwrap() error { return e.Err }

// Chain is one descriptor chain popped from the available ring: the
// device-readable buffers followed by the device-writable ones, as slices
// of guest memory (valid while the guest memory is mapped; the guest may
// change their contents at any time, so parse a copy of any header you
// validate). Return it with Queue.Push(Head, bytesWritten).
type Chain struct {
	Head        uint16
	Readable    [][]byte
	Writable    [][]byte
	ReadableLen uint64 // total bytes in Readable
	WritableLen uint64 // total bytes in Writable
}

func (c *Chain) reset(head uint16) {
	clear(c.Readable)
	clear(c.Writable)
	c.Head = head
	c.Readable = c.Readable[:0]
	c.Writable = c.Writable[:0]
	c.ReadableLen = 0
	c.WritableLen = 0
}

// CopyReadable copies the readable buffers, in order, into dst and returns
// the number of bytes copied (min(len(dst), ReadableLen)).
func (c *Chain) CopyReadable(dst []byte) int {
	n := 0
	for _, b := range c.Readable {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], b)
	}
	return n
}

// FillWritable copies src, in order, into the writable buffers and returns
// the number of bytes written (min(len(src), WritableLen)).
func (c *Chain) FillWritable(src []byte) int {
	n := 0
	for _, b := range c.Writable {
		if n == len(src) {
			break
		}
		n += copy(b, src[n:])
	}
	return n
}

// Queue is the device side of one split virtqueue.
//
// The transport fills the configuration fields (Size, Ready, the three
// ring addresses, EventIdx and IndirectDesc, usually through SetFeatures)
// while the driver sets the queue up, then calls Init at DRIVER_OK. From
// then on exactly one goroutine at a time (the device's worker for this
// queue) may call Pop, Push and the notification methods; the transport
// calls Reset only after the device has stopped that worker.
//
// A guest that corrupts the ring makes Pop return an error; the queue then
// stays broken (every Pop returns the same error, see Err) until Reset.
type Queue struct {
	// MaxSize is what the device supports (QueueNumMax); set by NewQueue.
	MaxSize uint16
	// Size is the number of descriptors the driver chose (QueueNum).
	Size uint16
	// Ready mirrors the QueueReady register.
	Ready bool
	// DescAddr, DriverAddr and DeviceAddr are the guest-physical addresses
	// of the descriptor table, the available ring and the used ring.
	DescAddr, DriverAddr, DeviceAddr uint64
	// EventIdx: VIRTIO_RING_F_EVENT_IDX was negotiated (used_event and
	// avail_event are in use; the ring flags are ignored).
	EventIdx bool
	// IndirectDesc: VIRTIO_RING_F_INDIRECT_DESC was negotiated.
	IndirectDesc bool

	mem               *GuestMemory
	desc, avail, used []byte // the rings, bound by Init

	nextAvail uint16 // next avail.ring slot to consume (free-running)
	nextUsed  uint16 // next used.ring slot to fill (free-running)
	published uint16 // used.idx as last stored

	signalled uint16 // used.idx when NeedsInterrupt last ran
	usedFlags uint16 // shadow of used.flags (device-owned)

	broken error
}

// NewQueue returns a queue whose device supports up to maxSize entries;
// Size starts at maxSize.
func NewQueue(maxSize uint16) *Queue {
	q := &Queue{MaxSize: maxSize}
	q.Reset()
	return q
}

// Reset returns the queue to its initial state: not ready, size MaxSize,
// ring addresses 0, no features, indexes 0, not broken, unbound.
func (q *Queue) Reset() {
	*q = Queue{MaxSize: q.MaxSize, Size: q.MaxSize}
}

// SetFeatures sets EventIdx and IndirectDesc from negotiated feature bits.
func (q *Queue) SetFeatures(features uint64) {
	q.EventIdx = features&FeatureRingEventIdx != 0
	q.IndirectDesc = features&FeatureRingIndirectDesc != 0
}

// availLen and usedLen are the ring sizes for the current configuration.
func (q *Queue) availLen() uint64 {
	n := 4 + 2*uint64(q.Size)
	if q.EventIdx {
		n += 2 // used_event
	}
	return n
}

func (q *Queue) usedLen() uint64 {
	n := 4 + 8*uint64(q.Size)
	if q.EventIdx {
		n += 2 // avail_event
	}
	return n
}

// Init validates the configuration against mem and binds the queue to it:
// the size must be a power of two no larger than MaxSize (and
// QueueSizeMax), the rings aligned and each inside one region of mem.
// EventIdx must be set before Init (it changes the ring sizes). Init keeps
// NextAvail and NextUsed as they are, so a restored queue can be set up
// either way round.
func (q *Queue) Init(mem *GuestMemory) error {
	q.mem, q.desc, q.avail, q.used = nil, nil, nil, nil
	if mem == nil {
		return fmt.Errorf("init virtqueue: no guest memory: %w", ErrQueueNotReady)
	}
	s := q.Size
	if s == 0 || s&(s-1) != 0 || s > q.MaxSize || s > QueueSizeMax {
		return fmt.Errorf("init virtqueue: size %d (max %d): %w", s, q.MaxSize, ErrQueueSize)
	}
	if q.DescAddr%16 != 0 || q.DriverAddr%2 != 0 || q.DeviceAddr%4 != 0 {
		return fmt.Errorf("init virtqueue: desc %#x avail %#x used %#x: %w",
			q.DescAddr, q.DriverAddr, q.DeviceAddr, ErrQueueAlign)
	}
	desc, err := mem.Slice(q.DescAddr, DescSize*uint64(s))
	if err != nil {
		return fmt.Errorf("init virtqueue: descriptor table: %w", err)
	}
	avail, err := mem.Slice(q.DriverAddr, q.availLen())
	if err != nil {
		return fmt.Errorf("init virtqueue: available ring: %w", err)
	}
	used, err := mem.Slice(q.DeviceAddr, q.usedLen())
	if err != nil {
		return fmt.Errorf("init virtqueue: used ring: %w", err)
	}
	q.mem, q.desc, q.avail, q.used = mem, desc, avail, used
	q.broken = nil
	q.published = q.nextUsed
	q.signalled = q.nextUsed
	// Start with notifications enabled and the shadow matching memory.
	q.usedFlags = 0
	storeU16(q.used, 0, 0)
	if q.EventIdx {
		storeU16(q.used, 4+8*int(s), q.nextAvail)
	}
	return nil
}

// Bound reports whether Init succeeded since the last Reset.
func (q *Queue) Bound() bool { return q.mem != nil }

// Err returns the error that broke the queue, or nil.
func (q *Queue) Err() error { return q.broken }

// NextAvail returns the index of the next available-ring entry the device
// will consume (vhost's vring base; VHOST_GET_VRING_BASE).
func (q *Queue) NextAvail() uint16 { return q.nextAvail }

// SetNextAvail restores the consume index (VHOST_SET_VRING_BASE).
func (q *Queue) SetNextAvail(v uint16) { q.nextAvail = v }

// NextUsed returns the index of the next used-ring entry the device will
// fill (equal to used.idx once published).
func (q *Queue) NextUsed() uint16 { return q.nextUsed }

// SetNextUsed restores the used index. It does not write used.idx, which
// already holds it in a live ring.
func (q *Queue) SetNextUsed(v uint16) {
	q.nextUsed = v
	q.published = v
	q.signalled = v
}

func (q *Queue) fail(err error) error {
	q.broken = err
	return err
}

// pending reads avail.idx (acquire) and checks it against nextAvail.
func (q *Queue) pending() (uint16, error) {
	idx := loadU16Acquire(q.avail, 2)
	n := idx - q.nextAvail
	if n > q.Size {
		return 0, q.fail(fmt.Errorf("virtqueue avail.idx %d, device at %d, size %d: %w",
			idx, q.nextAvail, q.Size, ErrAvailIdxJump))
	}
	return n, nil
}

// Pending returns how many chains are available and not yet popped.
func (q *Queue) Pending() (uint16, error) {
	if q.broken != nil {
		return 0, q.broken
	}
	if q.mem == nil {
		return 0, ErrQueueNotReady
	}
	return q.pending()
}

// Pop returns the next available chain, or (nil, nil) when the ring is
// empty. See PopInto for a variant that reuses a Chain.
func (q *Queue) Pop() (*Chain, error) {
	c := new(Chain)
	ok, err := q.PopInto(c)
	if !ok {
		return nil, err
	}
	return c, nil
}

// PopInto fills c with the next available chain (reusing its slices) and
// returns true, or returns false when the ring is empty or on error. An
// error breaks the queue (see Queue).
func (q *Queue) PopInto(c *Chain) (bool, error) {
	if q.broken != nil {
		return false, q.broken
	}
	if q.mem == nil {
		return false, ErrQueueNotReady
	}
	n, err := q.pending()
	if err != nil || n == 0 {
		return false, err
	}
	slot := int(q.nextAvail & (q.Size - 1))
	head := loadU16(q.avail, 4+2*slot)
	if head >= q.Size {
		return false, q.fail(fmt.Errorf("virtqueue avail.ring[%d] = %d, size %d: %w", slot, head, q.Size, ErrHeadIndex))
	}
	c.reset(head)
	if err := q.walk(c, head); err != nil {
		c.reset(head)
		return false, q.fail(err)
	}
	q.nextAvail++
	return true, nil
}

// walk follows the chain at head into c.
func (q *Queue) walk(c *Chain, head uint16) error {
	table := q.desc
	tableLen := uint32(q.Size)
	indirect := false
	idx := uint16(head)
	count := uint32(0)
	writable := false
	chainErr := func(err error) error {
		return &ChainError{Head: head, Desc: idx, Indirect: indirect, Err: err}
	}
	for {
		if uint32(idx) >= tableLen {
			return chainErr(ErrNextIndex)
		}
		count++
		if count > tableLen {
			return chainErr(ErrChainTooLong)
		}
		// Read each field once: the guest may rewrite the descriptor.
		d := table[DescSize*int(idx):][:DescSize]
		addr := binary.LittleEndian.Uint64(d[0:])
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])

		if flags&DescFIndirect != 0 {
			switch {
			case !q.IndirectDesc:
				return chainErr(ErrIndirectNotNegotiated)
			case indirect:
				return chainErr(ErrNestedIndirect)
			case flags&DescFNext != 0:
				return chainErr(ErrIndirectNext)
			case length == 0 || length%DescSize != 0 || length/DescSize > QueueSizeMax:
				return chainErr(ErrIndirectLen)
			}
			t, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return chainErr(errors.Join(ErrIndirectOutOfBounds, err))
			}
			table, tableLen, indirect = t, length/DescSize, true
			idx, count = 0, 0
			continue
		}

		if flags&DescFWrite != 0 {
			writable = true
			var err error
			if c.Writable, err = q.mem.AppendSlices(c.Writable, addr, uint64(length)); err != nil {
				return chainErr(errors.Join(ErrBufferOutOfBounds, err))
			}
			c.WritableLen += uint64(length)
		} else {
			if writable {
				return chainErr(ErrWriteOrder)
			}
			var err error
			if c.Readable, err = q.mem.AppendSlices(c.Readable, addr, uint64(length)); err != nil {
				return chainErr(errors.Join(ErrBufferOutOfBounds, err))
			}
			c.ReadableLen += uint64(length)
		}
		if flags&DescFNext == 0 {
			return nil
		}
		idx = next
	}
}

// AddUsed writes a used element (head, written bytes) without publishing
// it; PublishUsed makes every added element visible at once.
func (q *Queue) AddUsed(head uint16, written uint32) error {
	if q.mem == nil {
		return ErrQueueNotReady
	}
	if head >= q.Size {
		return fmt.Errorf("virtqueue push head %d, size %d: %w", head, q.Size, ErrHeadIndex)
	}
	e := q.used[4+8*int(q.nextUsed&(q.Size-1)):][:8]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.nextUsed++
	return nil
}

// PublishUsed stores used.idx (release) so the driver sees every element
// added since the last publish.
func (q *Queue) PublishUsed() {
	if q.mem == nil || q.published == q.nextUsed {
		return
	}
	storeU16Release(q.used, 2, q.nextUsed)
	q.published = q.nextUsed
}

// Push returns a chain to the driver: AddUsed then PublishUsed. written is
// the number of bytes the device wrote into the chain's writable buffers.
// Call NeedsInterrupt afterwards to decide whether to signal the driver.
func (q *Queue) Push(head uint16, written uint32) error {
	if err := q.AddUsed(head, written); err != nil {
		return err
	}
	q.PublishUsed()
	return nil
}

// NeedsInterrupt reports whether the driver wants a used-buffer
// notification for the elements published since the previous call (or
// since Init / SetNextUsed): without EVENT_IDX unless avail.flags has
// NO_INTERRUPT; with EVENT_IDX when used.idx moved past used_event
// (vring_need_event, modulo 2^16). Nothing published: false.
func (q *Queue) NeedsInterrupt() bool {
	if q.mem == nil {
		return false
	}
	// Publishing used.idx must be visible before we read the driver's
	// suppression field (store -> load).
	Fence()
	old, cur := q.signalled, q.published
	q.signalled = cur
	if old == cur {
		return false
	}
	if !q.EventIdx {
		return loadU16(q.avail, 0)&AvailFNoInterrupt == 0
	}
	event := loadU16(q.avail, 4+2*int(q.Size))
	return needEvent(event, cur, old)
}

// needEvent is vring_need_event: whether moving an index from old to cur
// passed event (i.e. event is in [old, cur) modulo 2^16).
func needEvent(event, cur, old uint16) bool {
	return cur-event-1 < cur-old
}

// DisableNotification asks the driver not to kick this queue (sets
// VRING_USED_F_NO_NOTIFY). With EVENT_IDX it does nothing: avail_event is
// left behind and the driver stops kicking once it has passed it.
func (q *Queue) DisableNotification() {
	if q.mem == nil || q.EventIdx || q.usedFlags&UsedFNoNotify != 0 {
		return
	}
	q.usedFlags |= UsedFNoNotify
	storeU16(q.used, 0, q.usedFlags)
}

// EnableNotification asks the driver to kick this queue again (clears
// NO_NOTIFY, or with EVENT_IDX sets avail_event to NextAvail), then
// re-reads avail.idx and reports whether the caller must call Pop again:
// chains arrived before the driver could see the request (no kick may come
// for them), or the queue is broken and Pop will return the error. An
// unbound queue returns false.
func (q *Queue) EnableNotification() bool {
	if q.mem == nil {
		return false
	}
	if q.broken != nil {
		return true
	}
	if q.EventIdx {
		storeU16(q.used, 4+8*int(q.Size), q.nextAvail)
	} else {
		q.usedFlags &^= UsedFNoNotify
		storeU16(q.used, 0, q.usedFlags)
	}
	// The request must be visible before we re-read avail.idx.
	Fence()
	n, err := q.pending()
	return err != nil || n > 0
}
