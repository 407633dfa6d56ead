// Package virtiotest is the driver side of a split virtqueue, for tests of
// virtio devices: it lays out descriptor tables and rings in a byte slice
// that backs a virtio.GuestMemory, adds descriptor chains (direct or
// indirect, well-formed or hostile), publishes them, reads the used ring,
// and sets the driver's suppression fields. It also drives a virtio-mmio
// register window through device initialisation (InitMMIO). Its guest
// memory lives on the Go heap (NewMemory) or, for a backend that maps it
// or a real VM, in a memfd (NewSharedMemory).
//
// Nothing here is safe for concurrent use; it is meant to run in the same
// goroutine as the device code under test, or with explicit handoffs.
package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/govmm/govmm/virtio"
)

// ErrNoSpace: the test memory or the descriptor table is full.
var ErrNoSpace = errors.New("virtiotest: out of space")

// Memory is test guest memory: one region of len(Buf) bytes at GPA Base,
// with a bump allocator for rings and buffers.
type Memory struct {
	Guest *virtio.GuestMemory
	Base  uint64
	Buf   []byte
	next  uint64 // allocation offset into Buf
}

// NewMemory allocates size bytes of guest memory at GPA base (a multiple
// of 8).
func NewMemory(base uint64, size int) (*Memory, error) {
	if base%8 != 0 || size <= 0 {
		return nil, fmt.Errorf("virtiotest: memory %#x+%d: need base%%8 == 0 and size > 0", base, size)
	}
	buf := make([]byte, size)
	gm, err := virtio.NewGuestMemory(virtio.Region{GPA: base, Mem: buf})
	if err != nil {
		return nil, err
	}
	return &Memory{Guest: gm, Base: base, Buf: buf}, nil
}

// Alloc reserves n bytes aligned to align (a power of two, or 0/1) and
// returns their GPA. The memory is zeroed.
func (m *Memory) Alloc(n, align uint64) (uint64, error) {
	if align == 0 {
		align = 1
	}
	off := (m.next + align - 1) &^ (align - 1)
	if off > uint64(len(m.Buf)) || n > uint64(len(m.Buf))-off {
		return 0, fmt.Errorf("alloc %d bytes: %w", n, ErrNoSpace)
	}
	m.next = off + n
	clear(m.Buf[off : off+n])
	return m.Base + off, nil
}

// Mark returns the allocator position, for Release.
func (m *Memory) Mark() uint64 { return m.next }

// Release frees every allocation made after Mark returned mark (reusing
// buffer space in long tests).
func (m *Memory) Release(mark uint64) {
	if mark <= m.next {
		m.next = mark
	}
}

// Bytes returns the n bytes at gpa (a view of Buf), or nil if they are not
// all inside the memory.
func (m *Memory) Bytes(gpa, n uint64) []byte {
	if gpa < m.Base || gpa-m.Base > uint64(len(m.Buf)) || n > uint64(len(m.Buf))-(gpa-m.Base) {
		return nil
	}
	off := gpa - m.Base
	return m.Buf[off : off+n]
}

func (m *Memory) le16(gpa uint64) uint16 { return binary.LittleEndian.Uint16(m.Bytes(gpa, 2)) }
func (m *Memory) le32(gpa uint64) uint32 { return binary.LittleEndian.Uint32(m.Bytes(gpa, 4)) }
func (m *Memory) put16(gpa uint64, v uint16) {
	binary.LittleEndian.PutUint16(m.Bytes(gpa, 2), v)
}

// Desc is a raw descriptor (struct virtq_desc).
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

func putDesc(b []byte, d Desc) {
	binary.LittleEndian.PutUint64(b[0:], d.Addr)
	binary.LittleEndian.PutUint32(b[8:], d.Len)
	binary.LittleEndian.PutUint16(b[12:], d.Flags)
	binary.LittleEndian.PutUint16(b[14:], d.Next)
}

// Buffer is one element of a chain: device-readable with the content Data,
// or device-writable of Len bytes.
type Buffer struct {
	Data     []byte
	Len      uint32
	Writable bool
}

// Readable returns a device-readable buffer holding data.
func Readable(data []byte) Buffer { return Buffer{Data: data, Len: uint32(len(data))} }

// Writable returns a device-writable buffer of n bytes.
func Writable(n uint32) Buffer { return Buffer{Len: n, Writable: true} }

type placed struct {
	addr     uint64
	len      uint32
	writable bool
}

// Used is one element the device put in the used ring.
type Used struct {
	ID  uint32
	Len uint32
}

// Driver is the driver side of one split virtqueue in a Memory.
type Driver struct {
	Mem                           *Memory
	Size                          uint16
	DescAddr, AvailAddr, UsedAddr uint64
	// EventIdx selects the driver's suppression protocol (set by Queue
	// from the features, or directly).
	EventIdx bool

	free      []uint16            // free descriptor indexes
	chains    map[uint16][]uint16 // head -> descriptors it holds
	bufs      map[uint16][]placed // head -> its buffers
	availIdx  uint16              // next avail slot (driver shadow)
	published uint16              // avail.idx in memory
	lastUsed  uint16              // next used element to consume
}

// NewDriver lays out a queue of the given size in m: descriptor table
// (16-aligned), available ring (2-aligned) and used ring (4-aligned), each
// with room for the EVENT_IDX fields, all zeroed.
func NewDriver(m *Memory, size uint16) (*Driver, error) {
	d := &Driver{Mem: m, Size: size, chains: map[uint16][]uint16{}, bufs: map[uint16][]placed{}}
	var err error
	if d.DescAddr, err = m.Alloc(16*uint64(size), 16); err != nil {
		return nil, err
	}
	if d.AvailAddr, err = m.Alloc(6+2*uint64(size), 2); err != nil {
		return nil, err
	}
	if d.UsedAddr, err = m.Alloc(6+8*uint64(size), 4); err != nil {
		return nil, err
	}
	for i := int(size) - 1; i >= 0; i-- {
		d.free = append(d.free, uint16(i))
	}
	return d, nil
}

// Configure writes the driver's layout into q (Size, addresses, Ready) and
// its features (EventIdx, IndirectDesc), as a transport would.
func (d *Driver) Configure(q *virtio.Queue, features uint64) {
	q.Size = d.Size
	q.DescAddr, q.DriverAddr, q.DeviceAddr = d.DescAddr, d.AvailAddr, d.UsedAddr
	q.Ready = true
	q.SetFeatures(features)
	d.EventIdx = q.EventIdx
}

// Queue returns a device-side queue (maximum size d.Size) configured for
// this driver with the given features and bound to the memory.
func (d *Driver) Queue(features uint64) (*virtio.Queue, error) {
	q := virtio.NewQueue(d.Size)
	d.Configure(q, features)
	if err := q.Init(d.Mem.Guest); err != nil {
		return nil, err
	}
	return q, nil
}

// place copies the buffers into fresh memory.
func (d *Driver) place(bufs []Buffer) ([]placed, error) {
	out := make([]placed, 0, len(bufs))
	for _, b := range bufs {
		n := b.Len
		if !b.Writable {
			n = uint32(len(b.Data))
		}
		gpa, err := d.Mem.Alloc(uint64(n), 8)
		if err != nil {
			return nil, err
		}
		copy(d.Mem.Bytes(gpa, uint64(n)), b.Data)
		out = append(out, placed{addr: gpa, len: n, writable: b.Writable})
	}
	return out, nil
}

func (d *Driver) takeDescs(n int) ([]uint16, error) {
	if n > len(d.free) {
		return nil, fmt.Errorf("%d descriptors: %w", n, ErrNoSpace)
	}
	ids := make([]uint16, n)
	for i := range ids {
		ids[i] = d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
	}
	return ids, nil
}

// AddChain places bufs in memory, chains them in the descriptor table and
// puts the head in the next available-ring slot. It is not visible to the
// device until Publish.
func (d *Driver) AddChain(bufs ...Buffer) (uint16, error) {
	if len(bufs) == 0 {
		return 0, errors.New("virtiotest: empty chain")
	}
	pl, err := d.place(bufs)
	if err != nil {
		return 0, err
	}
	ids, err := d.takeDescs(len(pl))
	if err != nil {
		return 0, err
	}
	for i, p := range pl {
		desc := Desc{Addr: p.addr, Len: p.len}
		if p.writable {
			desc.Flags |= virtio.DescFWrite
		}
		if i+1 < len(pl) {
			desc.Flags |= virtio.DescFNext
			desc.Next = ids[i+1]
		}
		d.SetDesc(ids[i], desc)
	}
	head := ids[0]
	d.chains[head], d.bufs[head] = ids, pl
	d.AddHead(head)
	return head, nil
}

// AddIndirect places bufs in memory, describes them in an indirect table,
// and adds a chain of one INDIRECT descriptor pointing at it.
func (d *Driver) AddIndirect(bufs ...Buffer) (uint16, error) {
	if len(bufs) == 0 {
		return 0, errors.New("virtiotest: empty chain")
	}
	pl, err := d.place(bufs)
	if err != nil {
		return 0, err
	}
	table := make([]Desc, len(pl))
	for i, p := range pl {
		table[i] = Desc{Addr: p.addr, Len: p.len}
		if p.writable {
			table[i].Flags |= virtio.DescFWrite
		}
		if i+1 < len(pl) {
			table[i].Flags |= virtio.DescFNext
			table[i].Next = uint16(i + 1)
		}
	}
	tgpa, err := d.WriteTable(table)
	if err != nil {
		return 0, err
	}
	ids, err := d.takeDescs(1)
	if err != nil {
		return 0, err
	}
	d.SetDesc(ids[0], Desc{Addr: tgpa, Len: uint32(16 * len(table)), Flags: virtio.DescFIndirect})
	d.chains[ids[0]], d.bufs[ids[0]] = ids, pl
	d.AddHead(ids[0])
	return ids[0], nil
}

// WriteTable writes descriptors into fresh memory (an indirect table) and
// returns its GPA.
func (d *Driver) WriteTable(descs []Desc) (uint64, error) {
	gpa, err := d.Mem.Alloc(16*uint64(len(descs)), 16)
	if err != nil {
		return 0, err
	}
	b := d.Mem.Bytes(gpa, 16*uint64(len(descs)))
	for i, desc := range descs {
		putDesc(b[16*i:], desc)
	}
	return gpa, nil
}

// SetDesc writes descriptor i of the queue's table (i < Size).
func (d *Driver) SetDesc(i uint16, desc Desc) {
	putDesc(d.Mem.Bytes(d.DescAddr+16*uint64(i), 16), desc)
}

// AddHead puts head in the next available-ring slot without publishing
// (any value, for hostile tests).
func (d *Driver) AddHead(head uint16) {
	d.Mem.put16(d.AvailAddr+4+2*uint64(d.availIdx%d.Size), head)
	d.availIdx++
}

// Publish makes the added chains visible (stores avail.idx) and reports
// whether the device wants a kick for them (VRING_USED_F_NO_NOTIFY, or
// avail_event with EVENT_IDX).
func (d *Driver) Publish() bool {
	old := d.published
	d.SetAvailIdx(d.availIdx)
	if d.EventIdx {
		event := d.AvailEvent()
		return uint16(d.availIdx-event-1) < uint16(d.availIdx-old)
	}
	return d.UsedFlags()&virtio.UsedFNoNotify == 0
}

// SetAvailIdx stores avail.idx directly (hostile tests may move it
// anywhere); later AddHead calls continue from v.
func (d *Driver) SetAvailIdx(v uint16) {
	d.Mem.put16(d.AvailAddr+2, v)
	d.availIdx, d.published = v, v
}

// AvailIdx returns avail.idx as stored in memory.
func (d *Driver) AvailIdx() uint16 { return d.Mem.le16(d.AvailAddr + 2) }

// SetAvailFlags stores avail.flags (virtio.AvailFNoInterrupt).
func (d *Driver) SetAvailFlags(v uint16) { d.Mem.put16(d.AvailAddr, v) }

// SetUsedEvent stores used_event (EVENT_IDX).
func (d *Driver) SetUsedEvent(v uint16) {
	d.Mem.put16(d.AvailAddr+4+2*uint64(d.Size), v)
}

// UsedIdx returns used.idx.
func (d *Driver) UsedIdx() uint16 { return d.Mem.le16(d.UsedAddr + 2) }

// UsedFlags returns used.flags.
func (d *Driver) UsedFlags() uint16 { return d.Mem.le16(d.UsedAddr) }

// AvailEvent returns avail_event (EVENT_IDX).
func (d *Driver) AvailEvent() uint16 {
	return d.Mem.le16(d.UsedAddr + 4 + 8*uint64(d.Size))
}

// UsedElem returns used.ring[i % Size].
func (d *Driver) UsedElem(i uint16) Used {
	a := d.UsedAddr + 4 + 8*uint64(i%d.Size)
	return Used{ID: d.Mem.le32(a), Len: d.Mem.le32(a + 4)}
}

// GetUsed consumes the next used element, if the device published one, and
// frees the chain's descriptors.
func (d *Driver) GetUsed() (Used, bool) {
	if d.lastUsed == d.UsedIdx() {
		return Used{}, false
	}
	u := d.UsedElem(d.lastUsed)
	d.lastUsed++
	if u.ID < uint32(d.Size) {
		head := uint16(u.ID)
		d.free = append(d.free, d.chains[head]...)
		delete(d.chains, head)
	}
	return u, true
}

// Written returns the first n bytes of the device-writable buffers of the
// chain at head (as the driver would read them after GetUsed).
func (d *Driver) Written(head uint16, n uint32) []byte {
	var out []byte
	for _, p := range d.bufs[head] {
		if !p.writable || uint32(len(out)) >= n {
			continue
		}
		k := min(p.len, n-uint32(len(out)))
		out = append(out, d.Mem.Bytes(p.addr, uint64(k))...)
	}
	return out
}
