package mmio

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzSerial throws arbitrary register access sequences and input at a UART.
// It must never panic, LSR must always show an idle transmitter, IIR must
// always hold a valid identification, and exactly the THR writes made
// outside DLAB and loopback must reach the output writer, in order.
func FuzzSerial(f *testing.F) {
	f.Add([]byte{0x10, 0x03, 0x00, 'h', 0x00, 'i', 0x25})            // LCR, THR, THR, LSR
	f.Add([]byte{0x11, 0x0f, 0x30, 0x41, 0x42, 0x22, 0x20, 0x26})    // IER, Enqueue, IIR, RBR, MSR
	f.Add([]byte{0x13, 0x80, 0x00, 0x01, 0x11, 0x00, 0x13, 0x03})    // DLAB divisor
	f.Add([]byte{0x14, 0x1f, 0x00, 'x', 0x20, 0x26, 0x14, 0x00})     // loopback
	f.Add([]byte{0x12, 0x07, 0x30, 0x61, 0x12, 0x03, 0x22, 0x25})    // FCR resets
	f.Add([]byte{0x50, 0x04, 0x01, 0x02, 0x03, 0x04, 0x60, 0x08, 0}) // wide accesses
	f.Fuzz(func(t *testing.T, prog []byte) {
		var out bytes.Buffer
		irq := &countIRQ{}
		s := NewSerial(&out, irq)
		var want []byte
		for i := 0; i < len(prog); i++ {
			op := prog[i]
			arg := func() byte {
				if i+1 < len(prog) {
					i++
					return prog[i]
				}
				return 0
			}
			reg := uint64(op & 0x0f)
			switch op >> 4 {
			case 0, 1: // byte write
				v := arg()
				if reg == uartTHR && rd(s, uartLCR)&lcrDLAB == 0 && rd(s, uartMCR)&mcrLoop == 0 {
					want = append(want, v)
				}
				wr(s, reg, v)
			case 2: // byte read
				rd(s, reg)
			case 3: // enqueue
				n := int(arg())
				b := make([]byte, n)
				for j := range b {
					b[j] = byte(j) ^ op
				}
				if n == 255 {
					b = make([]byte, SerialRXBufferSize+1)
				}
				s.Enqueue(b)
			case 4: // register state checks
				lsr := rd(s, uartLSR)
				if lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
					t.Fatalf("LSR %#x: transmitter not idle", lsr)
				}
				id := rd(s, uartIIR) &^ iirFIFOs
				switch id {
				case iirNone, iirRLS, iirRDA, iirTHRE, iirMS:
				default:
					t.Fatalf("invalid IIR id %#x", id)
				}
			case 5: // wide write, may cross registers
				n := int(arg() % 16)
				b := make([]byte, n)
				for j := range b {
					b[j] = arg()
				}
				// Track THR bytes: only the first byte can hit THR.
				if reg == uartTHR && n > 0 && rd(s, uartLCR)&lcrDLAB == 0 && rd(s, uartMCR)&mcrLoop == 0 {
					want = append(want, b[0])
				}
				s.Write(reg, b)
			case 6: // wide read
				s.Read(reg, make([]byte, int(arg()%16)))
			default: // out-of-range offsets
				s.Read(uint64(op)<<56, make([]byte, 2))
				s.Write(uint64(op)<<56|uint64(arg()), []byte{1, 2})
			}
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("output %q, want %q", out.Bytes(), want)
		}
		if st := s.Stats(); st.Transmitted != uint64(len(want)) {
			t.Fatalf("Transmitted %d, want %d", st.Transmitted, len(want))
		}
	})
}

// FuzzBus throws arbitrary insert, remove and access sequences at a bus. It
// must never panic, keep its ranges sorted and disjoint, and route every
// successful access to a device whose range holds it.
func FuzzBus(f *testing.F) {
	f.Add([]byte{0x00, 0x10, 0x08, 0x20, 0x10, 0x01, 0x40, 0x17, 0x04})
	f.Add([]byte{0x00, 0xff, 0xff, 0x00, 0xf0, 0x20, 0x60, 0xff, 0x08})
	f.Add([]byte{0x00, 0x04, 0x04, 0x20, 0x04, 0x00, 0x00, 0x04, 0x01, 0x40, 0x04, 0x02})
	f.Fuzz(func(t *testing.T, prog []byte) {
		bus := NewBus("fuzz")
		devs := map[uint64]*recDev{} // by base
		sizes := map[uint64]uint64{} // by base
		pos := 0
		next := func() byte {
			if pos < len(prog) {
				pos++
				return prog[pos-1]
			}
			return 0
		}
		// Addresses are spread over a small space plus the top of the
		// 64-bit space, so overlaps, adjacency and wrap-around all occur.
		addr := func(b byte) uint64 {
			if b&0x80 != 0 {
				return ^uint64(0) - uint64(b&0x7f)
			}
			return uint64(b)
		}
		for pos < len(prog) {
			op := next()
			switch op % 4 {
			case 0: // insert
				base, size := addr(next()), uint64(next())
				if op&0x80 != 0 {
					size = ^uint64(0) - uint64(next()) // huge sizes
				}
				d := &recDev{tag: byte(base)}
				err := bus.Insert(base, size, d)
				if err == nil {
					devs[base], sizes[base] = d, size
				} else if !errors.Is(err, ErrOverlap) && !errors.Is(err, ErrInvalidRange) {
					t.Fatalf("Insert: unexpected error %v", err)
				}
			case 1: // remove
				base := addr(next())
				err := bus.Remove(base)
				if _, ok := devs[base]; ok != (err == nil) {
					t.Fatalf("Remove(%#x) = %v, mapped %v", base, err, ok)
				}
				delete(devs, base)
				delete(sizes, base)
			case 2, 3: // access
				a, n := addr(next()), int(next()%9)
				buf := make([]byte, n)
				var err error
				if op%4 == 2 {
					err = bus.Read(a, buf)
				} else {
					err = bus.Write(a, buf)
				}
				// Who should own it, by brute force over the model.
				var owner uint64
				found := false
				for base, size := range sizes {
					if (Range{Base: base, Size: size}).Contains(a, n) {
						if found {
							t.Fatalf("two ranges contain %#x", a)
						}
						owner, found = base, true
					}
				}
				if found != (err == nil) {
					t.Fatalf("access %#x len %d: err %v, model says mapped=%v", a, n, err, found)
				}
				if found && op%4 == 2 && n > 0 && buf[0] != devs[owner].tag^byte(a-owner) {
					t.Fatalf("read %#x routed wrongly: %#x", a, buf[0])
				}
			}
			rs := bus.Ranges()
			if len(rs) != len(devs) {
				t.Fatalf("bus has %d ranges, model %d", len(rs), len(devs))
			}
			for i := 1; i < len(rs); i++ {
				if rs[i-1].Last() >= rs[i].Base {
					t.Fatalf("ranges unsorted or overlapping: %v", rs)
				}
			}
		}
	})
}

// FuzzI8042 sends arbitrary byte sequences to both controller ports.
func FuzzI8042(f *testing.F) {
	f.Add([]byte{0x64, 0xaa, 0x60, 0x00, 0x64, 0x60, 0x60, 0x56})
	f.Add([]byte{0x64, 0xd1, 0x60, 0xfe})
	f.Fuzz(func(t *testing.T, prog []byte) {
		resets := 0
		k := NewI8042(func() { resets++ })
		bus := NewBus("pio")
		if err := k.Attach(bus); err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(prog); i += 2 {
			port := uint64(0x60 + prog[i]%8)
			buf := []byte{prog[i+1]}
			if prog[i]&0x80 != 0 {
				_ = bus.Read(port, buf)
			} else {
				_ = bus.Write(port, buf)
			}
		}
		if uint64(resets) != k.Resets() {
			t.Fatalf("onReset %d calls, Resets() %d", resets, k.Resets())
		}
	})
}
