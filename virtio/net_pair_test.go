package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

const (
	fV1     = virtio.FeatureVersion1
	fEvtIdx = virtio.FeatureRingEventIdx
	fIndir  = virtio.FeatureRingIndirectDesc
	fMrg    = virtio.NetFMrgRxbuf
)

func TestNetPairTransmit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		indirect bool
	}{
		{"plain", fV1, false},
		{"event-idx", fV1 | fEvtIdx, false},
		{"indirect", fV1 | fIndir, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPairEnv(t, tc.features, 16)
			f := frame(bcastMAC, 100, 1)
			// Header and frame split across three buffers, the header
			// itself split in two.
			parts := [][]byte{netHdr(0, 0, 7)[:5], append(netHdr(0, 0, 7)[5:], f[:30]...), f[30:]}
			var head uint16
			if tc.indirect {
				var err error
				head, err = e.tx.AddIndirect(vt.Readable(parts[0]), vt.Readable(parts[1]), vt.Readable(parts[2]))
				mustNoErr(t, err)
				e.tx.Publish()
			} else {
				head = e.addTX(t, parts...)
			}
			e.processTX(t)
			out := e.io.written()
			if len(out) != 1 {
				t.Fatalf("%d packets written, want 1", len(out))
			}
			// num_buffers is zeroed on the way out.
			if want := append(netHdr(0, 0, 0), f...); !bytes.Equal(out[0], want) {
				t.Errorf("written packet\n% x\nwant\n% x", out[0], want)
			}
			u := used(e.tx)
			if len(u) != 1 || u[0].ID != uint32(head) || u[0].Len != 0 {
				t.Errorf("used %v, want [{%d 0}]", u, head)
			}
			if e.irq.count() != 1 {
				t.Errorf("%d interrupts, want 1", e.irq.count())
			}
			s := e.pair.Stats()
			if s.TXPackets != 1 || s.TXBytes != 100 || s.TXDropped != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestNetPairTransmitDrops(t *testing.T) {
	f := frame(bcastMAC, 60, 2)
	hdrAnd := func(flags, gso uint8) [][]byte { return [][]byte{netHdr(flags, gso, 0), f} }
	for _, tc := range []struct {
		name     string
		features uint64
		parts    [][]byte
		writeErr bool
		bad      uint64
		written  int
	}{
		{"header only", fV1, [][]byte{netHdr(0, 0, 0)}, false, 1, 0},
		{"short frame", fV1, [][]byte{netHdr(0, 0, 0), f[:13]}, false, 1, 0},
		{"csum not negotiated", fV1, hdrAnd(1, 0), false, 0, 0},
		{"data-valid on transmit", fV1 | virtio.NetFCsum, hdrAnd(2, 0), false, 0, 0},
		{"tso4 not negotiated", fV1 | virtio.NetFCsum, hdrAnd(1, 1), false, 0, 0},
		{"tso6 not negotiated", fV1 | virtio.NetFCsum | virtio.NetFHostTSO4, hdrAnd(1, 4), false, 0, 0},
		{"udp gso", fV1 | virtio.NetFCsum | virtio.NetFHostTSO4, hdrAnd(1, 3), false, 0, 0},
		{"ecn", fV1 | virtio.NetFCsum | virtio.NetFHostTSO4, hdrAnd(1, 0x81), false, 0, 0},
		{"too long", fV1, [][]byte{netHdr(0, 0, 0), make([]byte, 65535+19)}, false, 0, 0},
		{"host write error", fV1, hdrAnd(0, 0), true, 0, 0},
		{"tso4 negotiated", fV1 | virtio.NetFCsum | virtio.NetFHostTSO4, hdrAnd(1, 1), false, 0, 1},
		{"tso6 negotiated", fV1 | virtio.NetFCsum | virtio.NetFHostTSO6, hdrAnd(1, 4), false, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPairEnv(t, tc.features, 8)
			if tc.writeErr {
				e.io.writeErr = errors.New("link down")
			}
			head := e.addTX(t, tc.parts...)
			e.processTX(t)
			if got := len(e.io.written()); got != tc.written {
				t.Errorf("%d packets written, want %d", got, tc.written)
			}
			if tc.written == 1 && !bytes.Equal(e.io.written()[0][:2], tc.parts[0][:2]) {
				t.Errorf("header % x not passed through", e.io.written()[0][:12])
			}
			u := used(e.tx)
			if len(u) != 1 || u[0].ID != uint32(head) || u[0].Len != 0 {
				t.Errorf("used %v: the chain must be returned", u)
			}
			s := e.pair.Stats()
			wantDropped := uint64(1 - tc.written)
			if s.TXDropped != wantDropped || s.BadBuffers != tc.bad || s.TXPackets != uint64(tc.written) {
				t.Errorf("stats %+v, want dropped %d bad %d", s, wantDropped, tc.bad)
			}
		})
	}
}

func TestNetPairReceive(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
	}{
		{"plain", fV1},
		{"mergeable", fV1 | fMrg},
		{"event-idx", fV1 | fEvtIdx},
		{"mergeable event-idx", fV1 | fMrg | fEvtIdx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPairEnv(t, tc.features, 16)
			heads := e.addRX(t, 4, 2048)
			f1, f2 := frame(devMAC, 60, 1), frame(devMAC, 1514, 2)
			// The kernel leaves num_buffers as it finds it: garbage.
			e.io.push(append(netHdr(0, 0, 0xabcd), f1...), append(netHdr(0, 0, 0), f2...))
			e.processRX(t)
			u := used(e.rx)
			if len(u) != 2 {
				t.Fatalf("used %v, want two packets", u)
			}
			for i, f := range [][]byte{f1, f2} {
				if u[i].ID != uint32(heads[i]) || u[i].Len != uint32(12+len(f)) {
					t.Errorf("used[%d] = %+v, want {%d %d}", i, u[i], heads[i], 12+len(f))
				}
				got := e.rx.Written(heads[i], u[i].Len)
				if want := append(netHdr(0, 0, 1), f...); !bytes.Equal(got, want) {
					t.Errorf("packet %d: got\n% x\nwant\n% x", i, got[:32], want[:32])
				}
			}
			if e.irq.count() != 1 {
				t.Errorf("%d interrupts for one batch, want 1", e.irq.count())
			}
			if s := e.pair.Stats(); s.RXPackets != 2 || s.RXBytes != uint64(len(f1)+len(f2)) || s.RXDropped != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// A packet larger than one buffer: spread over three with MRG_RXBUF,
// dropped without (the buffer is kept for the next packet).
func TestNetPairReceiveLarge(t *testing.T) {
	big := frame(devMAC, 5000, 3)
	small := frame(devMAC, 64, 4)
	t.Run("mergeable", func(t *testing.T) {
		e := newPairEnv(t, fV1|fMrg, 16)
		heads := e.addRX(t, 4, 2048)
		e.io.push(append(netHdr(0, 0, 0), big...))
		e.processRX(t)
		u := used(e.rx)
		want := []vt.Used{{ID: uint32(heads[0]), Len: 2048}, {ID: uint32(heads[1]), Len: 2048}, {ID: uint32(heads[2]), Len: 5012 - 4096}}
		if len(u) != 3 || u[0] != want[0] || u[1] != want[1] || u[2] != want[2] {
			t.Fatalf("used %v, want %v", u, want)
		}
		var got []byte
		for i := range u {
			got = append(got, e.rx.Written(heads[i], u[i].Len)...)
		}
		if wantPkt := append(netHdr(0, 0, 3), big...); !bytes.Equal(got, wantPkt) {
			t.Error("reassembled packet differs")
		}
	})
	t.Run("one buffer per packet", func(t *testing.T) {
		e := newPairEnv(t, fV1, 16)
		heads := e.addRX(t, 2, 2048)
		e.io.push(append(netHdr(0, 0, 0), big...), append(netHdr(0, 0, 0), small...))
		e.processRX(t)
		u := used(e.rx)
		if len(u) != 1 || u[0].ID != uint32(heads[0]) || u[0].Len != uint32(12+len(small)) {
			t.Fatalf("used %v: want the small packet in the first buffer", u)
		}
		if s := e.pair.Stats(); s.RXDropped != 1 || s.RXPackets != 1 {
			t.Errorf("stats %+v, want one dropped, one delivered", s)
		}
	})
	t.Run("more than the ring can hold", func(t *testing.T) {
		e := newPairEnv(t, fV1|fMrg, 2)
		heads := e.addRX(t, 2, 2048)
		e.io.push(append(netHdr(0, 0, 0), big...), append(netHdr(0, 0, 0), small...))
		e.processRX(t)
		u := used(e.rx)
		if len(u) != 1 || u[0].ID != uint32(heads[0]) {
			t.Fatalf("used %v: want the small packet in the first buffer", u)
		}
		if s := e.pair.Stats(); s.RXDropped != 1 || s.RXPackets != 1 {
			t.Errorf("stats %+v", s)
		}
	})
}

// Without buffers the pair holds the packet and asks for a kick; buffers
// arriving later deliver it, and kicks are suppressed again.
func TestNetPairReceiveWaitsForBuffers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
	}{{"flags", fV1}, {"event-idx", fV1 | fEvtIdx}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPairEnv(t, tc.features, 8)
			// Initially the device does not want RX kicks.
			h := e.addRX(t, 1, 2048)
			if e.rx.EventIdx {
				// avail_event is left at 0: only a wrap would cross it.
				if ev := e.rx.AvailEvent(); ev != 0 {
					t.Errorf("avail_event %d", ev)
				}
			} else if e.rx.UsedFlags()&virtio.UsedFNoNotify == 0 {
				t.Error("RX kicks not suppressed while buffers are available")
			}
			e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, 1)...), append(netHdr(0, 0, 0), frame(devMAC, 60, 2)...))
			e.processRX(t)
			if u := used(e.rx); len(u) != 1 || u[0].ID != uint32(h[0]) {
				t.Fatalf("used %v", u)
			}
			// Second packet is waiting: kicks requested.
			if e.rx.EventIdx {
				if ev := e.rx.AvailEvent(); ev != 1 {
					t.Errorf("avail_event %d, want 1 (the next buffer)", ev)
				}
			} else if e.rx.UsedFlags()&virtio.UsedFNoNotify != 0 {
				t.Error("RX kicks still suppressed while a packet waits")
			}
			if _, err := e.rx.AddChain(vt.Writable(2048)); err != nil {
				t.Fatal(err)
			}
			if !e.rx.Publish() {
				t.Error("driver would not kick for the new buffer")
			}
			e.processRX(t)
			if u := used(e.rx); len(u) != 1 {
				t.Fatalf("used %v, want the held packet", u)
			}
			if !e.rx.EventIdx && e.rx.UsedFlags()&virtio.UsedFNoNotify == 0 {
				t.Error("RX kicks not suppressed again after delivery")
			}
			if s := e.pair.Stats(); s.RXPackets != 2 || s.RXDropped != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestNetPairReceiveShortBuffer(t *testing.T) {
	for _, features := range []uint64{fV1, fV1 | fMrg} {
		e := newPairEnv(t, features, 8)
		short, err := e.rx.AddChain(vt.Writable(8))
		mustNoErr(t, err)
		good := e.addRX(t, 1, 2048)[0]
		e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, 1)...))
		e.processRX(t)
		u := used(e.rx)
		if len(u) != 2 || u[0] != (vt.Used{ID: uint32(short), Len: 0}) || u[1].ID != uint32(good) || u[1].Len != 72 {
			t.Errorf("features %#x: used %v, want the short buffer returned empty, then the packet", features, u)
		}
		if s := e.pair.Stats(); s.BadBuffers != 1 || s.RXPackets != 1 {
			t.Errorf("stats %+v", s)
		}
	}
}

func TestNetPairReceiveHeaders(t *testing.T) {
	gc := virtio.NetFGuestCsum
	f := frame(devMAC, 100, 5)
	for _, tc := range []struct {
		name       string
		features   uint64
		in         []byte // header from the host
		want       []byte // header delivered; nil: dropped
		wantPacket bool
	}{
		{"partial csum without GUEST_CSUM", fV1, netHdr(1, 0, 0), nil, false},
		{"data valid cleared without GUEST_CSUM", fV1, netHdr(2, 0, 0), netHdr(0, 0, 1), true},
		{"data valid kept with GUEST_CSUM", fV1 | gc, netHdr(2, 0, 0), netHdr(2, 0, 1), true},
		{"partial csum with GUEST_CSUM", fV1 | gc, netHdr(1, 0, 0), netHdr(1, 0, 1), true},
		{"unknown flags masked", fV1 | gc, netHdr(0xf5, 0, 0), netHdr(1, 0, 1), true},
		{"tso4 without GUEST_TSO4", fV1 | gc, netHdr(1, 1, 0), nil, false},
		{"tso4 with GUEST_TSO4", fV1 | gc | virtio.NetFGuestTSO4, netHdr(1, 1, 0), netHdr(1, 1, 1), true},
		{"tso6 with GUEST_TSO6", fV1 | gc | virtio.NetFGuestTSO6, netHdr(1, 4, 0), netHdr(1, 4, 1), true},
		{"ecn never", fV1 | gc | virtio.NetFGuestTSO4, netHdr(1, 0x81, 0), nil, false},
		{"udp never", fV1 | gc, netHdr(1, 3, 0), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPairEnv(t, tc.features, 8)
			h := e.addRX(t, 1, 2048)[0]
			e.io.push(append(append([]byte(nil), tc.in...), f...))
			e.processRX(t)
			u := used(e.rx)
			if !tc.wantPacket {
				if len(u) != 0 || e.pair.Stats().RXDropped != 1 {
					t.Errorf("used %v stats %+v, want the packet dropped", u, e.pair.Stats())
				}
				return
			}
			if len(u) != 1 {
				t.Fatalf("used %v", u)
			}
			if got := e.rx.Written(h, 12); !bytes.Equal(got, tc.want) {
				t.Errorf("header % x, want % x", got, tc.want)
			}
		})
	}
}

func TestNetPairReceiveFilter(t *testing.T) {
	accept := func(f []byte) bool { return bytes.Equal(f[:6], devMAC) }
	e := newPairEnvAccept(t, fV1, 8, accept)
	e.addRX(t, 4, 2048)
	other := []byte{0x02, 1, 2, 3, 4, 5}
	e.io.push(append(netHdr(0, 0, 0), frame(other, 60, 1)...), append(netHdr(0, 0, 0), frame(devMAC, 60, 2)...))
	e.processRX(t)
	if u := used(e.rx); len(u) != 1 {
		t.Errorf("used %v, want only the frame to our MAC", u)
	}
	if s := e.pair.Stats(); s.RXFiltered != 1 || s.RXPackets != 1 {
		t.Errorf("stats %+v", s)
	}
}

// EVENT_IDX: the device interrupts only when used.idx passes used_event,
// and asks for a kick only at the next available index after going idle.
func TestNetPairEventIdxSuppression(t *testing.T) {
	e := newPairEnv(t, fV1|fEvtIdx, 64)
	e.addRX(t, 32, 2048)
	push := func(n int) {
		for i := 0; i < n; i++ {
			e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, byte(i))...))
		}
	}
	// used_event 0: the first packet (used.idx 0 -> 1) interrupts.
	push(1)
	e.processRX(t)
	if e.irq.count() != 1 {
		t.Fatalf("%d interrupts, want 1", e.irq.count())
	}
	// used_event still 0: no interrupt for 1 -> 4.
	push(3)
	e.processRX(t)
	if e.irq.count() != 1 {
		t.Errorf("%d interrupts after used.idx passed nothing, want 1", e.irq.count())
	}
	// The driver asks for an interrupt once used.idx passes 5.
	e.rx.SetUsedEvent(5)
	push(1) // 4 -> 5: not yet
	e.processRX(t)
	if e.irq.count() != 1 {
		t.Errorf("%d interrupts at used.idx 5 with used_event 5, want 1", e.irq.count())
	}
	push(2) // 5 -> 7: crosses 5
	e.processRX(t)
	if e.irq.count() != 2 {
		t.Errorf("%d interrupts after crossing used_event, want 2", e.irq.count())
	}

	// Kicks: idle device, avail_event = next index; a batch of three
	// chains needs one kick, more chains before the device ran need none.
	e.processTX(t)
	f := frame(bcastMAC, 60, 9)
	kicks := 0
	for i := 0; i < 3; i++ {
		_, err := e.tx.AddChain(vt.Readable(append(netHdr(0, 0, 0), f...)))
		mustNoErr(t, err)
		if e.tx.Publish() {
			kicks++
		}
	}
	if kicks != 1 {
		t.Errorf("%d kicks for 3 chains added while the device was busy, want 1", kicks)
	}
	e.processTX(t)
	if len(e.io.written()) != 3 {
		t.Errorf("%d packets sent, want 3", len(e.io.written()))
	}
	if ev := e.tx.AvailEvent(); ev != 3 {
		t.Errorf("avail_event %d after going idle, want 3", ev)
	}
}

// Without EVENT_IDX: NO_INTERRUPT suppresses interrupts, and NO_NOTIFY is
// clear whenever the transmit side is idle.
func TestNetPairFlagSuppression(t *testing.T) {
	e := newPairEnv(t, fV1, 16)
	e.addRX(t, 8, 2048)
	e.rx.SetAvailFlags(virtio.AvailFNoInterrupt)
	e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, 1)...))
	e.processRX(t)
	if e.irq.count() != 0 {
		t.Errorf("%d interrupts with NO_INTERRUPT", e.irq.count())
	}
	e.rx.SetAvailFlags(0)
	e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, 2)...))
	e.processRX(t)
	if e.irq.count() != 1 {
		t.Errorf("%d interrupts, want 1", e.irq.count())
	}
	e.addTX(t, netHdr(0, 0, 0), frame(bcastMAC, 60, 3))
	e.processTX(t)
	if e.tx.UsedFlags()&virtio.UsedFNoNotify != 0 {
		t.Error("NO_NOTIFY left set on an idle transmit queue")
	}
}

func TestNetPairBudget(t *testing.T) {
	e := newPairEnv(t, fV1|fIndir, 256)
	f := frame(bcastMAC, 60, 1)
	for i := 0; i < 100; i++ {
		_, err := e.tx.AddIndirect(vt.Readable(netHdr(0, 0, 0)), vt.Readable(f))
		mustNoErr(t, err)
	}
	e.tx.Publish()
	more, err := e.pair.ProcessTX()
	if err != nil || !more || len(e.io.written()) != virtio.NetPairBudget {
		t.Fatalf("first ProcessTX: more=%v err=%v sent=%d, want true nil %d", more, err, len(e.io.written()), virtio.NetPairBudget)
	}
	more, err = e.pair.ProcessTX()
	if err != nil || more || len(e.io.written()) != 100 {
		t.Errorf("second ProcessTX: more=%v err=%v sent=%d", more, err, len(e.io.written()))
	}
}

// A broken ring is an error from ProcessTX/ProcessRX (the caller turns it
// into DEVICE_NEEDS_RESET) and stays one; nothing panics.
func TestNetPairHostileChains(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rx    bool
		setup func(t *testing.T, d *vt.Driver)
		want  error
	}{
		{"tx descriptor loop", false, func(t *testing.T, d *vt.Driver) {
			a, _ := d.Mem.Alloc(64, 8)
			d.SetDesc(0, vt.Desc{Addr: a, Len: 64, Flags: virtio.DescFNext, Next: 1})
			d.SetDesc(1, vt.Desc{Addr: a, Len: 64, Flags: virtio.DescFNext, Next: 0})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrChainTooLong},
		{"rx buffer outside memory", true, func(t *testing.T, d *vt.Driver) {
			d.SetDesc(0, vt.Desc{Addr: 1 << 40, Len: 2048, Flags: virtio.DescFWrite})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrBufferOutOfBounds},
		{"tx head out of range", false, func(t *testing.T, d *vt.Driver) {
			d.AddHead(200)
			d.Publish()
		}, virtio.ErrHeadIndex},
		{"rx avail index jump", true, func(t *testing.T, d *vt.Driver) {
			d.SetAvailIdx(100)
		}, virtio.ErrAvailIdxJump},
		{"tx nested indirect", false, func(t *testing.T, d *vt.Driver) {
			inner, _ := d.WriteTable([]vt.Desc{{Addr: 0x10000, Len: 16}})
			outer, _ := d.WriteTable([]vt.Desc{{Addr: inner, Len: 16, Flags: virtio.DescFIndirect}})
			d.SetDesc(0, vt.Desc{Addr: outer, Len: 16, Flags: virtio.DescFIndirect})
			d.AddHead(0)
			d.Publish()
		}, virtio.ErrNestedIndirect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPairEnv(t, fV1|fIndir, 8)
			d := e.tx
			if tc.rx {
				d = e.rx
				e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, 1)...))
			}
			tc.setup(t, d)
			call := e.pair.ProcessTX
			if tc.rx {
				call = e.pair.ProcessRX
			}
			for i := 0; i < 2; i++ {
				_, err := call()
				if !errors.Is(err, tc.want) {
					t.Fatalf("call %d: %v, want %v", i, err, tc.want)
				}
			}
		})
	}
}

func TestNetPairRewind(t *testing.T) {
	e := newPairEnv(t, fV1|fMrg, 16)
	e.addRX(t, 2, 2048)
	e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 5000, 1)...))
	e.processRX(t)
	if e.rxq.NextAvail() != 2 {
		t.Fatalf("NextAvail %d, want 2 (two buffers held)", e.rxq.NextAvail())
	}
	mustNoErr(t, e.pair.Rewind())
	if e.rxq.NextAvail() != 0 {
		t.Errorf("NextAvail %d after Rewind, want 0", e.rxq.NextAvail())
	}
	if s := e.pair.Stats(); s.RXDropped != 1 {
		t.Errorf("the held packet was not counted as dropped: %+v", s)
	}
	// The buffers are found again afterwards.
	e.io.push(append(netHdr(0, 0, 0), frame(devMAC, 60, 2)...))
	e.processRX(t)
	if u := used(e.rx); len(u) != 1 || u[0].Len != 72 {
		t.Errorf("used %v after rewind", u)
	}
}

func TestNewNetQueuePairErrors(t *testing.T) {
	e := newPairEnv(t, fV1, 8)
	unbound := virtio.NewQueue(8)
	for _, cfg := range []virtio.NetQueuePairConfig{
		{RX: unbound, TX: e.txq, IO: e.io, Interrupt: e.irq},
		{RX: e.rxq, TX: e.txq, Interrupt: e.irq},
		{RX: e.rxq, TX: e.txq, IO: e.io},
	} {
		if _, err := virtio.NewNetQueuePair(cfg); err == nil {
			t.Errorf("NewNetQueuePair(%+v) succeeded", cfg)
		}
	}
	var s virtio.NetPairStats
	s.TXPackets = 1
	if got := s.Add(s); got.TXPackets != 2 {
		t.Error("NetPairStats.Add")
	}
}

// FuzzNetPairPackets sends guest-chosen transmit chains (header and
// layout) and host-chosen received packets through a pair with fuzzed
// features: nothing panics, every chain comes back, and what reaches the
// host or the guest obeys the negotiated offloads.
func FuzzNetPairPackets(f *testing.F) {
	f.Add(uint16(0), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 8, 0}, uint8(3), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 2, 0x47, 0x56, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0})
	f.Add(uint16(0xffff), []byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, uint8(1), []byte{1, 4})
	f.Add(uint16(0x8001), make([]byte, 3000), uint8(200), make([]byte, 5000))
	f.Fuzz(func(t *testing.T, fbits uint16, tx []byte, split uint8, rx []byte) {
		features := fV1
		for i, b := range []uint64{fMrg, fEvtIdx, virtio.NetFCsum, virtio.NetFHostTSO4, virtio.NetFHostTSO6,
			virtio.NetFGuestCsum, virtio.NetFGuestTSO4, virtio.NetFGuestTSO6} {
			if fbits&(1<<i) != 0 {
				features |= b
			}
		}
		e := newPairEnv(t, features, 8)
		if len(tx) > 0 {
			cut := int(split) % (len(tx) + 1)
			var err error
			if cut == 0 || cut == len(tx) {
				_, err = e.tx.AddChain(vt.Readable(tx))
			} else {
				_, err = e.tx.AddChain(vt.Readable(tx[:cut]), vt.Readable(tx[cut:]))
			}
			mustNoErr(t, err)
			e.tx.Publish()
		}
		sizes := []uint32{uint32(split), 2048, 64, 4096}
		for _, n := range sizes {
			_, err := e.rx.AddChain(vt.Writable(n))
			mustNoErr(t, err)
		}
		e.rx.Publish()
		e.io.push(rx)
		e.processTX(t)
		e.processRX(t)
		if len(tx) > 0 && len(used(e.tx)) != 1 {
			t.Fatal("transmit chain not returned")
		}
		for _, p := range e.io.written() {
			flags, gso := p[0], p[1]
			if flags&^1 != 0 || (flags&1 != 0 && features&virtio.NetFCsum == 0) {
				t.Fatalf("flags %#x reached the host", flags)
			}
			if (gso == 1 && features&virtio.NetFHostTSO4 == 0) || (gso == 4 && features&virtio.NetFHostTSO6 == 0) || (gso != 0 && gso != 1 && gso != 4) {
				t.Fatalf("gso %#x reached the host", gso)
			}
		}
		us := used(e.rx)
		for i := 0; i < len(us); i++ {
			if us[i].Len == 0 {
				continue
			}
			h := e.rx.Written(uint16(us[i].ID), 12)
			if len(h) != 12 {
				t.Fatalf("a used buffer of %d bytes holds no header", len(h))
			}
			if h[0]&1 != 0 && features&virtio.NetFGuestCsum == 0 {
				t.Fatal("partial checksum delivered without GUEST_CSUM")
			}
			n := int(binary.LittleEndian.Uint16(h[10:]))
			if n < 1 || (n > 1 && features&fMrg == 0) || i+n > len(us) {
				t.Fatalf("num_buffers %d (%d used)", n, len(us))
			}
			i += n - 1 // continuation buffers carry no header
		}
	})
}
