package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
)

// NetHdrSize is the size of the header in front of every virtio-net frame
// with VIRTIO_F_VERSION_1 (struct virtio_net_hdr_v1: flags, gso_type,
// hdr_len, gso_size, csum_start, csum_offset, num_buffers). It is also
// the vnet header of a TAP set to TUNSETVNETHDRSZ 12, so packets cross
// between a virtqueue and a TAP without translation.
const NetHdrSize = 12

// Header fields and values (virtio 1.x, "Device Operation" of the network
// device).
const (
	netHdrFNeedsCsum = 1 // flags: the checksum at csum_start+csum_offset is partial
	netHdrFDataValid = 2 // flags (device to driver): the checksum was verified

	netGSONone  = 0
	netGSOTCPv4 = 1
	netGSOTCPv6 = 4
	netGSOECN   = 0x80

	ethHdrLen = 14
	// netMaxFrame bounds a frame in either direction: a 64 KiB GSO
	// packet plus its Ethernet and VLAN headers.
	netMaxFrame = 65535 + 18
	// netRxBufSize is the receive scratch buffer: one byte more than
	// the largest packet, so a truncated read is detectable.
	netRxBufSize = NetHdrSize + netMaxFrame + 1
	// netMaxIOV is the most buffers one writev takes (UIO_MAXIOV); longer
	// chains are copied into one buffer first.
	netMaxIOV = 1024
	// NetPairBudget is how many packets ProcessTX or ProcessRX moves
	// before returning, so one busy direction cannot starve the other.
	NetPairBudget = 64
)

// ErrNoPacket is what PacketIO.ReadPacket returns (errors.Is) when no
// packet is waiting. It is EAGAIN so that a non-blocking fd's own error
// satisfies it.
var ErrNoPacket error = syscall.EAGAIN

// PacketIO is the host side of one virtio-net queue pair: a packet
// endpoint that carries the NetHdrSize-byte virtio-net header in front of
// every frame, as a TAP queue fd with IFF_VNET_HDR and TUNSETVNETHDRSZ 12
// does (*tap.Queue implements it).
type PacketIO interface {
	// ReadPacket reads one packet (header and frame) into buf without
	// blocking, or returns an error matching ErrNoPacket when none is
	// waiting. A packet longer than buf may be truncated.
	ReadPacket(buf []byte) (int, error)
	// WritePacket sends one packet: the concatenation of pkt, header
	// first. It must not keep pkt (the slices alias guest memory).
	WritePacket(pkt [][]byte) error
}

// PollablePacketIO is a PacketIO whose readiness a worker can wait for:
// SyscallConn's fd becomes readable when ReadPacket has a packet.
type PollablePacketIO interface {
	PacketIO
	syscall.Conn
}

// NetQueuePairConfig describes one queue pair.
type NetQueuePairConfig struct {
	// Index is the pair's number (receiveqN/transmitqN with N = Index+1),
	// used in errors.
	Index int
	// RX and TX are the pair's bound queues (Init done, EventIdx set).
	RX, TX *Queue
	// IO is the packet endpoint.
	IO PacketIO
	// Features is the negotiated feature set; MRG_RXBUF, the checksum
	// and TSO bits matter here. VERSION_1 is assumed (12-byte header).
	Features uint64
	// Interrupt raises the used-buffer notification (the MMIO
	// transport's Activation.Interrupt, or EventFDInterrupt over a
	// vhost-user call eventfd).
	Interrupt Interrupt
	// Accept, if set, filters received frames by content (the control
	// queue's receive filter); nil accepts everything.
	Accept func(frame []byte) bool
}

// NetPairStats counts what a queue pair did.
type NetPairStats struct {
	TXPackets, TXBytes uint64 // frames sent to the host (bytes without header)
	TXDropped          uint64 // transmit chains dropped: bad header, bad size, host write error
	RXPackets, RXBytes uint64 // frames delivered to the guest
	RXDropped          uint64 // received packets dropped: too big for the buffers, bad header, read error
	RXFiltered         uint64 // received frames refused by the receive filter
	BadBuffers         uint64 // chains too short for the header, returned unused
	TXKicks, RXKicks   uint64 // driver notifications (ioeventfd counts or exits)
	Interrupts         uint64 // used-buffer interrupts raised
	// TXSpan and RXSpan are the times from the first to the last packet
	// moved in each direction (rates: packets / span).
	TXSpan, RXSpan time.Duration
}

// Add returns s + o, counter by counter (spans add too).
func (s NetPairStats) Add(o NetPairStats) NetPairStats {
	return NetPairStats{
		TXPackets: s.TXPackets + o.TXPackets, TXBytes: s.TXBytes + o.TXBytes, TXDropped: s.TXDropped + o.TXDropped,
		RXPackets: s.RXPackets + o.RXPackets, RXBytes: s.RXBytes + o.RXBytes, RXDropped: s.RXDropped + o.RXDropped,
		RXFiltered: s.RXFiltered + o.RXFiltered, BadBuffers: s.BadBuffers + o.BadBuffers,
		TXKicks: s.TXKicks + o.TXKicks, RXKicks: s.RXKicks + o.RXKicks, Interrupts: s.Interrupts + o.Interrupts,
		TXSpan: s.TXSpan + o.TXSpan, RXSpan: s.RXSpan + o.RXSpan,
	}
}

type netPairCounters struct {
	txPackets, txBytes, txDropped            atomic.Uint64
	rxPackets, rxBytes, rxDropped, filtered  atomic.Uint64
	badBuffers, txKicks, rxKicks, interrupts atomic.Uint64
	// first and last packet times, in ns since the pair was created
	// plus one (0: none yet).
	txFirst, txLast, rxFirst, rxLast atomic.Int64
}

// NetQueuePair is the data path of one virtio-net queue pair: it moves
// frames from the transmit queue to a PacketIO and from the PacketIO to
// the receive queue, with the header rules of the negotiated features,
// interrupt and kick suppression (EVENT_IDX or the ring flags), and
// mergeable receive buffers.
//
// It does not know who drives it: it has no goroutine and no fd of its
// own. Something calls ProcessTX when the transmit queue is kicked and
// ProcessRX when the receive queue is kicked or the PacketIO has packets:
// a NetPairWorker in the VMM, or a vhost-user back-end over guest memory
// it mapped from the front-end's memory table (a GuestMemory over the
// mapped regions, queues set up from SET_VRING_* and Init'ed on it).
// Only one goroutine at a time may call its methods.
//
// Guest mistakes that concern one packet (a header that asks for an
// offload that was not negotiated, a chain too short for the header, a
// frame too large) drop that packet and are counted; a broken ring (Pop's
// errors) is returned, and the caller reports it (Activation.Fail) and
// stops calling.
type NetQueuePair struct {
	index    int
	rx, tx   *Queue
	io       PacketIO
	irq      Interrupt
	accept   func([]byte) bool
	mrg      bool
	hostCsum bool
	hostTSO4 bool
	hostTSO6 bool
	gstCsum  bool
	gstTSO4  bool
	gstTSO6  bool

	start time.Time
	st    netPairCounters

	// transmit state
	txChain Chain
	txHdr   [NetHdrSize]byte
	txIov   [][]byte
	txLin   []byte // for chains with more than netMaxIOV buffers

	// receive state
	rxBuf    []byte // the packet read from IO, waiting for room
	rxLen    int    // its length; 0: none
	held     []*Chain
	pool     []*Chain
	rxNotify bool // receive kicks requested (waiting for buffers)
	// rxWork counts what the current ProcessRX call did against
	// NetPairBudget: packets read (delivered, dropped or filtered),
	// unusable chains returned, and retries after buffers arrived.
	rxWork int
	// heldTail: the held chains are the last ones popped (no unusable
	// chain was returned after them), so Rewind can un-pop them.
	heldTail bool
}

// NewNetQueuePair returns the data path for cfg. The receive queue starts
// with kicks suppressed: the pair asks for them only when it holds a
// packet and has no buffer for it.
func NewNetQueuePair(cfg NetQueuePairConfig) (*NetQueuePair, error) {
	switch {
	case cfg.RX == nil || cfg.TX == nil || !cfg.RX.Bound() || !cfg.TX.Bound():
		return nil, fmt.Errorf("net queue pair %d: queues not bound: %w", cfg.Index, ErrQueueNotReady)
	case cfg.IO == nil:
		return nil, fmt.Errorf("net queue pair %d: no packet endpoint", cfg.Index)
	case cfg.Interrupt == nil:
		return nil, fmt.Errorf("net queue pair %d: no interrupt", cfg.Index)
	}
	f := cfg.Features
	p := &NetQueuePair{
		index:    cfg.Index,
		rx:       cfg.RX,
		tx:       cfg.TX,
		io:       cfg.IO,
		irq:      cfg.Interrupt,
		accept:   cfg.Accept,
		mrg:      f&NetFMrgRxbuf != 0,
		hostCsum: f&NetFCsum != 0,
		hostTSO4: f&NetFHostTSO4 != 0,
		hostTSO6: f&NetFHostTSO6 != 0,
		gstCsum:  f&NetFGuestCsum != 0,
		gstTSO4:  f&NetFGuestTSO4 != 0,
		gstTSO6:  f&NetFGuestTSO6 != 0,
		start:    time.Now(),
		rxBuf:    make([]byte, netRxBufSize),
	}
	p.rx.DisableNotification()
	return p, nil
}

// Index returns the pair's number.
func (p *NetQueuePair) Index() int { return p.index }

// IO returns the pair's packet endpoint.
func (p *NetQueuePair) IO() PacketIO { return p.io }

// Stats returns the pair's counters. Safe from any goroutine.
func (p *NetQueuePair) Stats() NetPairStats {
	span := func(first, last *atomic.Int64) time.Duration {
		f, l := first.Load(), last.Load()
		if f == 0 || l < f {
			return 0
		}
		return time.Duration(l - f)
	}
	return NetPairStats{
		TXPackets: p.st.txPackets.Load(), TXBytes: p.st.txBytes.Load(), TXDropped: p.st.txDropped.Load(),
		RXPackets: p.st.rxPackets.Load(), RXBytes: p.st.rxBytes.Load(), RXDropped: p.st.rxDropped.Load(),
		RXFiltered: p.st.filtered.Load(), BadBuffers: p.st.badBuffers.Load(),
		TXKicks: p.st.txKicks.Load(), RXKicks: p.st.rxKicks.Load(), Interrupts: p.st.interrupts.Load(),
		TXSpan: span(&p.st.txFirst, &p.st.txLast), RXSpan: span(&p.st.rxFirst, &p.st.rxLast),
	}
}

// CountKicks adds driver notifications to the statistics (a worker calls
// it with what it drained from a kick eventfd).
func (p *NetQueuePair) CountKicks(rx, tx uint64) {
	if rx != 0 {
		p.st.rxKicks.Add(rx)
	}
	if tx != 0 {
		p.st.txKicks.Add(tx)
	}
}

func (p *NetQueuePair) stamp(first, last *atomic.Int64) {
	now := int64(time.Since(p.start)) + 1
	first.CompareAndSwap(0, now)
	last.Store(now)
}

// complete publishes q's used elements and raises an interrupt if the
// driver wants one; err (a broken queue) is returned wrapped.
func (p *NetQueuePair) complete(q *Queue, err error) error {
	q.PublishUsed()
	if q.NeedsInterrupt() {
		p.st.interrupts.Add(1)
		if serr := p.irq.Signal(InterruptUsedBuffer); serr != nil {
			err = errors.Join(err, fmt.Errorf("net queue pair %d interrupt: %w", p.index, serr))
		}
	}
	if err != nil {
		return fmt.Errorf("net queue pair %d: %w", p.index, err)
	}
	return nil
}

// ProcessTX sends every available transmit chain (at most NetPairBudget)
// to the PacketIO and returns the chains to the driver. more reports that
// the budget ran out with chains left: call again without waiting for a
// kick. Otherwise kicks are enabled again before it returns. An error
// means the transmit queue is broken.
func (p *NetQueuePair) ProcessTX() (more bool, err error) {
	q := p.tx
	done := 0
	moved := false
	defer func() {
		if moved {
			p.stamp(&p.st.txFirst, &p.st.txLast)
		}
	}()
	for {
		q.DisableNotification()
		for done < NetPairBudget {
			ok, err := q.PopInto(&p.txChain)
			if err != nil {
				return false, p.complete(q, err)
			}
			if !ok {
				break
			}
			moved = p.transmit(&p.txChain) || moved
			if err := q.AddUsed(p.txChain.Head, 0); err != nil {
				return false, p.complete(q, err)
			}
			done++
		}
		if done >= NetPairBudget {
			return true, p.complete(q, nil)
		}
		if err := p.complete(q, nil); err != nil {
			return false, err
		}
		if !q.EnableNotification() {
			return false, nil
		}
	}
}

// transmit sends one chain and reports whether a frame went out.
func (p *NetQueuePair) transmit(c *Chain) bool {
	if c.ReadableLen < NetHdrSize+ethHdrLen {
		p.st.badBuffers.Add(1)
		p.st.txDropped.Add(1)
		return false
	}
	if c.ReadableLen > NetHdrSize+netMaxFrame {
		p.st.txDropped.Add(1)
		return false
	}
	// The guest can rewrite its buffers at any time: decide on a copy
	// of the header and send that copy.
	c.CopyReadable(p.txHdr[:])
	if !p.txHeaderOK() {
		p.st.txDropped.Add(1)
		return false
	}
	binary.LittleEndian.PutUint16(p.txHdr[10:], 0) // num_buffers: receive only
	iov := append(p.txIov[:0], p.txHdr[:])
	skip := uint64(NetHdrSize)
	for _, b := range c.Readable {
		if skip >= uint64(len(b)) {
			skip -= uint64(len(b))
			continue
		}
		iov = append(iov, b[skip:])
		skip = 0
	}
	if len(iov) > netMaxIOV {
		if p.txLin == nil {
			p.txLin = make([]byte, netMaxFrame)
		}
		n := 0
		for _, b := range iov[1:] {
			n += copy(p.txLin[n:], b)
		}
		iov = append(iov[:1], p.txLin[:n])
	}
	err := p.io.WritePacket(iov)
	clear(iov) // do not keep guest memory referenced
	p.txIov = iov[:0]
	if err != nil {
		p.st.txDropped.Add(1)
		return false
	}
	p.st.txPackets.Add(1)
	p.st.txBytes.Add(c.ReadableLen - NetHdrSize)
	return true
}

// txHeaderOK checks the transmit header against the negotiated host
// offloads: a partial checksum needs CSUM, TCP segmentation HOST_TSO4/6,
// and nothing else (UDP, ECN) is offered.
func (p *NetQueuePair) txHeaderOK() bool {
	flags, gso := p.txHdr[0], p.txHdr[1]
	if flags&^netHdrFNeedsCsum != 0 || (flags&netHdrFNeedsCsum != 0 && !p.hostCsum) {
		return false
	}
	switch gso {
	case netGSONone:
		return true
	case netGSOTCPv4:
		return p.hostTSO4
	case netGSOTCPv6:
		return p.hostTSO6
	}
	return false
}

// rxHeaderOK adjusts the header of the packet in rxBuf to the negotiated
// guest offloads, or reports that the packet cannot be delivered.
func (p *NetQueuePair) rxHeaderOK() bool {
	h := p.rxBuf[:NetHdrSize]
	flags, gso := h[0], h[1]
	if !p.gstCsum {
		if flags&netHdrFNeedsCsum != 0 {
			return false // a partial checksum the guest cannot complete
		}
		h[0] = 0
	} else {
		h[0] = flags & (netHdrFNeedsCsum | netHdrFDataValid)
	}
	switch gso {
	case netGSONone:
		return true
	case netGSOTCPv4:
		return p.gstTSO4
	case netGSOTCPv6:
		return p.gstTSO6
	}
	return false
}

// ProcessRX moves waiting packets (at most NetPairBudget) from the
// PacketIO into receive buffers. It returns more when the budget ran out
// (call again without waiting). Otherwise either the PacketIO had no
// packet (wait for it to become readable) or the receive queue had no
// room (kicks are enabled: wait for one). An error means the receive
// queue is broken.
//
// Everything the guest or the peer can repeat without end counts against
// the budget: packets read (delivered, dropped or filtered), chains too
// short to use, and retries after the driver added buffers that still
// did not fit. So a call always returns after a bounded amount of work
// and the caller can look for a stop request in between.
func (p *NetQueuePair) ProcessRX() (more bool, err error) {
	delivered := 0
	defer func() {
		if delivered > 0 {
			p.stamp(&p.st.rxFirst, &p.st.rxLast)
		}
	}()
	p.rxWork = 0
	for p.rxWork < NetPairBudget {
		if p.rxLen == 0 {
			n, err := p.io.ReadPacket(p.rxBuf)
			if err != nil {
				if !errors.Is(err, ErrNoPacket) {
					p.st.rxDropped.Add(1)
				}
				return false, p.complete(p.rx, nil)
			}
			p.rxWork++
			switch {
			case n >= len(p.rxBuf) || n < NetHdrSize+ethHdrLen || !p.rxHeaderOK():
				p.st.rxDropped.Add(1)
				continue
			case p.accept != nil && !p.accept(p.rxBuf[NetHdrSize:n]):
				p.st.filtered.Add(1)
				continue
			}
			p.rxLen = n
		}
		ok, err := p.place()
		if err != nil {
			return false, p.complete(p.rx, err)
		}
		if !ok {
			if p.rxWork >= NetPairBudget {
				// popRX stopped on the budget, not on an empty ring.
				return true, p.complete(p.rx, nil)
			}
			// No room: ask for a kick when the driver adds buffers;
			// buffers that arrived meanwhile are tried at once.
			p.rxNotify = true
			if p.rx.EnableNotification() {
				p.rxWork++
				continue
			}
			return false, p.complete(p.rx, nil)
		}
		if p.rxNotify {
			p.rx.DisableNotification()
			p.rxNotify = false
		}
		delivered++
	}
	return true, p.complete(p.rx, nil)
}

// popRX pops the next usable receive chain into held. Chains without room
// for the header are returned to the driver unused, each counted against
// the budget: it reports false without an error when the ring is empty or
// the budget ran out (rxWork >= NetPairBudget).
func (p *NetQueuePair) popRX() (bool, error) {
	for p.rxWork < NetPairBudget {
		var c *Chain
		if n := len(p.pool); n > 0 {
			c, p.pool = p.pool[n-1], p.pool[:n-1]
		} else {
			c = new(Chain)
		}
		ok, err := p.rx.PopInto(c)
		if err != nil || !ok {
			p.pool = append(p.pool, c)
			return false, err
		}
		if c.WritableLen < NetHdrSize {
			p.st.badBuffers.Add(1)
			p.rxWork++
			p.pool = append(p.pool, c)
			if len(p.held) > 0 {
				p.heldTail = false
			}
			if err := p.rx.AddUsed(c.Head, 0); err != nil {
				return false, err
			}
			continue
		}
		if len(p.held) == 0 {
			p.heldTail = true
		}
		p.held = append(p.held, c)
		return true, nil
	}
	return false, nil
}

// release drops the first k held chains into the pool.
func (p *NetQueuePair) release(k int) {
	p.pool = append(p.pool, p.held[:k]...)
	n := copy(p.held, p.held[k:])
	clear(p.held[n:])
	p.held = p.held[:n]
}

// place delivers the packet in rxBuf, reporting false when the receive
// queue has not enough room yet (the chains popped so far stay held).
func (p *NetQueuePair) place() (bool, error) {
	pkt := p.rxBuf[:p.rxLen]
	need := uint64(len(pkt))
	k := 0
	for room := uint64(0); room < need; k++ {
		if !p.mrg && k == 1 {
			// One buffer per packet and it is too small: drop the
			// packet, keep the buffer for the next one.
			p.st.rxDropped.Add(1)
			p.rxLen = 0
			return true, nil
		}
		if k == len(p.held) {
			if len(p.held) >= int(p.rx.Size) {
				// Even every buffer the ring can hold would not do.
				p.st.rxDropped.Add(1)
				p.rxLen = 0
				return true, nil
			}
			ok, err := p.popRX()
			if !ok {
				return false, err
			}
		}
		room += p.held[k].WritableLen
	}
	binary.LittleEndian.PutUint16(pkt[10:], uint16(k)) // num_buffers
	off := 0
	for _, c := range p.held[:k] {
		n := c.FillWritable(pkt[off:])
		off += n
		if err := p.rx.AddUsed(c.Head, uint32(n)); err != nil {
			return false, err
		}
	}
	p.release(k)
	p.rxLen = 0
	p.st.rxPackets.Add(1)
	p.st.rxBytes.Add(need - NetHdrSize)
	return true, nil
}

// Rewind gives back the receive chains the pair popped but has not filled
// (NextAvail moves back over them, or, if that is not possible because
// the driver's ring order was disturbed, they are returned used and
// empty) and drops a received packet still waiting for room. Call it
// only while nothing else runs the pair, before the queue's state is read
// out (vhost-user GET_VRING_BASE) or handed elsewhere.
func (p *NetQueuePair) Rewind() error {
	if p.rxLen != 0 {
		p.st.rxDropped.Add(1)
		p.rxLen = 0
	}
	if len(p.held) == 0 {
		return nil
	}
	if p.heldTail {
		p.rx.SetNextAvail(p.rx.NextAvail() - uint16(len(p.held)))
	} else {
		for _, c := range p.held {
			if err := p.rx.AddUsed(c.Head, 0); err != nil {
				return fmt.Errorf("net queue pair %d rewind: %w", p.index, err)
			}
		}
		p.rx.PublishUsed()
	}
	p.release(len(p.held))
	return nil
}
