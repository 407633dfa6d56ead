package virtio_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// Work a guest or a peer can repeat without end is bounded per call: the
// caller (a worker) must get back to its event loop, where a stop request
// waits.

// shortRXRing posts n one-descriptor receive chains of size bytes each,
// descriptor i being chain i, and publishes them.
func shortRXRing(t *testing.T, d *vt.Driver, n int, size uint32) {
	t.Helper()
	for i := range n {
		a, err := d.Mem.Alloc(uint64(size), 8)
		mustNoErr(t, err)
		d.SetDesc(uint16(i), vt.Desc{Addr: a, Len: size, Flags: virtio.DescFWrite})
		d.AddHead(uint16(i))
	}
	d.Publish()
}

func TestNetPairRXBudgetUnusableChains(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
	}{
		{"mergeable", fV1 | fMrg},
		{"one buffer per packet", fV1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const chains = 200
			e := newPairEnv(t, tc.features, 256)
			shortRXRing(t, e.rx, chains, 4) // no room for the header
			e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, 1)...))
			more, err := e.pair.ProcessRX()
			mustNoErr(t, err)
			s := e.pair.Stats()
			if !more || s.BadBuffers > virtio.NetPairBudget {
				t.Fatalf("first ProcessRX: more=%v after %d unusable chains, want more=true after at most %d",
					more, s.BadBuffers, virtio.NetPairBudget)
			}
			// Later calls finish the ring; the packet then waits for room.
			for i := 0; more; i++ {
				if i > chains {
					t.Fatal("ProcessRX keeps reporting more")
				}
				more, err = e.pair.ProcessRX()
				mustNoErr(t, err)
			}
			if s := e.pair.Stats(); s.BadBuffers != chains || s.RXPackets != 0 {
				t.Errorf("stats %+v, want %d bad buffers and no packet", s, chains)
			}
			if u := used(e.rx); len(u) != chains {
				t.Errorf("%d chains returned, want %d", len(u), chains)
			}
		})
	}
}

// A peer sending nothing but undeliverable packets (too short, here)
// counts against the budget too.
func TestNetPairRXBudgetDroppedPackets(t *testing.T) {
	const packets = 1000
	e := newPairEnv(t, fV1, 16)
	for range packets {
		e.io.push(make([]byte, virtio.NetHdrSize+4))
	}
	more, err := e.pair.ProcessRX()
	mustNoErr(t, err)
	e.io.mu.Lock()
	reads := e.io.reads
	e.io.mu.Unlock()
	if !more || reads > virtio.NetPairBudget {
		t.Fatalf("first ProcessRX: more=%v after %d reads, want more=true after at most %d", more, reads, virtio.NetPairBudget)
	}
	e.processRX(t)
	if s := e.pair.Stats(); s.RXDropped != packets {
		t.Errorf("%d dropped, want %d", s.RXDropped, packets)
	}
}

// A driver that hands back unusable receive chains as fast as the device
// returns them: every ProcessRX call still returns, after at most the
// budget.
func TestNetPairRXBudgetRefillingDriver(t *testing.T) {
	// Shared (mmap'ed) memory: the driver goroutine and the device touch
	// the rings concurrently, as a guest and a device do.
	mem, err := vt.NewSharedMemory("rx-refill", 0x10000, 1<<20)
	mustNoErr(t, err)
	rx, err := vt.NewDriver(mem.Memory, 64)
	mustNoErr(t, err)
	tx, err := vt.NewDriver(mem.Memory, 8)
	mustNoErr(t, err)
	rxq, err := rx.Queue(fV1 | fMrg)
	mustNoErr(t, err)
	txq, err := tx.Queue(fV1 | fMrg)
	mustNoErr(t, err)
	io := &fakeIO{}
	pair, err := virtio.NewNetQueuePair(virtio.NetQueuePairConfig{
		RX: rxq, TX: txq, IO: io, Features: fV1 | fMrg, Interrupt: &countIRQ{},
	})
	mustNoErr(t, err)
	shortRXRing(t, rx, 64, 8)
	io.push(append(netHdr(0, 0, 0), frame(devMAC, 1000, 1)...))

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the driver, with single-copy-atomic index accesses
		defer wg.Done()
		g := mem.Guest
		availIdx, lastUsed := uint16(64), uint16(0)
		for !stop.Load() {
			usedIdx, err := g.LoadU16Acquire(rx.UsedAddr + 2)
			if err != nil || usedIdx == lastUsed {
				continue
			}
			for ; lastUsed != usedIdx; lastUsed++ {
				id, _ := g.U32(rx.UsedAddr + 4 + 8*uint64(lastUsed%rx.Size))
				g.PutU16(rx.AvailAddr+4+2*uint64(availIdx%rx.Size), uint16(id))
				availIdx++
			}
			g.StoreU16Release(rx.AvailAddr+2, availIdx)
		}
	}()
	defer func() {
		stop.Store(true)
		wg.Wait()
		mem.Close()
	}()

	sawMore := false
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		before := pair.Stats().BadBuffers
		res := make(chan error, 1)
		go func() {
			more, err := pair.ProcessRX()
			sawMore = sawMore || more
			res <- err
		}()
		select {
		case err := <-res:
			mustNoErr(t, err)
		case <-time.After(5 * time.Second):
			stop.Store(true) // let the call end, then fail
			<-res
			t.Fatalf("ProcessRX did not return while the driver kept refilling (%d unusable chains consumed)",
				pair.Stats().BadBuffers-before)
		}
		if n := pair.Stats().BadBuffers - before; n > virtio.NetPairBudget {
			t.Fatalf("one ProcessRX call consumed %d unusable chains, budget %d", n, virtio.NetPairBudget)
		}
	}
	if !sawMore {
		t.Error("no ProcessRX call reported more work")
	}
}

// ringRefiller plays a driver that puts every used chain straight back
// on the available ring, with single-copy-atomic index accesses (the
// device reads them concurrently).
type ringRefiller struct {
	mu                 sync.Mutex
	g                  *virtio.GuestMemory
	d                  *vt.Driver
	availIdx, lastUsed uint16
	armed              bool
}

// refill re-adds what the device used since the last call and publishes.
func (r *ringRefiller) refill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.armed {
		return
	}
	d := r.d
	usedIdx, err := r.g.LoadU16Acquire(d.UsedAddr + 2)
	if err != nil || usedIdx == r.lastUsed {
		return
	}
	for ; r.lastUsed != usedIdx; r.lastUsed++ {
		id, _ := r.g.U32(d.UsedAddr + 4 + 8*uint64(r.lastUsed%d.Size))
		r.g.PutU16(d.AvailAddr+4+2*uint64(r.availIdx%d.Size), uint16(id))
		r.availIdx++
	}
	r.g.StoreU16Release(d.AvailAddr+2, r.availIdx)
}

func (r *ringRefiller) arm(on bool) {
	r.mu.Lock()
	r.armed = on
	r.mu.Unlock()
}

// hookBackend calls hook from EnablePair: the control worker calls it
// for every VQ_PAIRS_SET while pair 1 is not ready.
type hookBackend struct {
	*sockBackend
	hook func()
}

func (b *hookBackend) EnablePair(i int, on bool) error {
	b.hook()
	return b.sockBackend.EnablePair(i, on)
}

// A driver that resubmits control commands as fast as they are answered
// cannot keep Reset from stopping the control worker.
func TestNetControlQueueRefilledStops(t *testing.T) {
	mem, err := vt.NewSharedMemory("ctrl-refill", 0x100000, 1<<20)
	mustNoErr(t, err)
	t.Cleanup(func() { mem.Close() })
	rf := &ringRefiller{g: mem.Guest}
	be := &hookBackend{sockBackend: newSockBackend(t, 2), hook: rf.refill}
	n, err := virtio.NewNet(virtio.NetDeviceConfig{MAC: devMAC, QueuePairs: 2, Backend: be})
	mustNoErr(t, err)
	tr, err := virtio.NewMMIOTransport(n, virtio.MMIOConfig{Base: 0xd0000000, Mem: mem.Guest, IRQ: &countIRQ{}})
	mustNoErr(t, err)
	t.Cleanup(func() { tr.Close() })
	var drivers []*vt.Driver
	for _, max := range n.QueueMaxSizes() {
		d, err := vt.NewDriver(mem.Memory, min(max, 16))
		mustNoErr(t, err)
		drivers = append(drivers, d)
	}
	cq := drivers[4]
	rf.d = cq
	// Four VQ_PAIRS_SET 1 commands, written but not yet published.
	for range 4 {
		ctrl(t, cq, virtio.NetCtrlMQ, virtio.NetCtrlMQPairsSet, le16(1))
	}
	rf.availIdx = 4
	// Pair 1 stays unready, so every command detaches its TAP queue.
	features := fV1 | virtio.NetFCtrlVQ | virtio.NetFMQ
	mustNoErr(t, vt.InitMMIO(tr, features, drivers[0], drivers[1], nil, nil, cq))
	rf.arm(true)
	rf.mu.Lock()
	mem.Guest.StoreU16Release(cq.AvailAddr+2, 4)
	rf.mu.Unlock()
	vt.WriteReg(tr, vt.RegQueueNotify, 4)
	// Let the driver keep the worker busy for a while.
	for start := time.Now(); n.Stats().CtrlOK < 500; {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("control queue not served: %+v", n.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	reset := make(chan struct{})
	go func() {
		vt.WriteReg(tr, vt.RegStatus, 0)
		close(reset)
	}()
	select {
	case <-reset:
	case <-time.After(5 * time.Second):
		rf.arm(false) // let the worker run dry, then fail
		<-reset
		t.Fatal("reset did not stop the control worker while the driver kept the queue full")
	}
	rf.arm(false)
	// Nothing is served after the reset.
	ok := n.Stats().CtrlOK
	time.Sleep(20 * time.Millisecond)
	if got := n.Stats().CtrlOK; got != ok {
		t.Errorf("%d commands served after reset", got-ok)
	}
}
