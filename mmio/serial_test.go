package mmio

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// countIRQ is a fake Interrupt that counts edges.
type countIRQ struct {
	n   atomic.Int64
	err error
}

func (c *countIRQ) Trigger() error {
	c.n.Add(1)
	return c.err
}

// syncBuf is a goroutine-safe bytes.Buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func rd(s *Serial, reg uint64) byte {
	b := []byte{0}
	s.Read(reg, b)
	return b[0]
}

func wr(s *Serial, reg uint64, v byte) { s.Write(reg, []byte{v}) }

func newTestSerial() (*Serial, *syncBuf, *countIRQ) {
	out, irq := &syncBuf{}, &countIRQ{}
	return NewSerial(out, irq), out, irq
}

func TestSerialResetState(t *testing.T) {
	s, _, _ := newTestSerial()
	tests := []struct {
		reg  uint64
		want byte
	}{
		{uartIER, 0},
		{uartIIR, iirNone},
		{uartLCR, 0},
		{uartMCR, 0},
		{uartLSR, lsrTHRE | lsrTEMT},
		{uartMSR, msrCTS | msrDSR | msrDCD},
		{uartSCR, 0},
		{8, 0xff}, // past the registers
	}
	for _, tc := range tests {
		if got := rd(s, tc.reg); got != tc.want {
			t.Errorf("reg %d = %#x, want %#x", tc.reg, got, tc.want)
		}
	}
}

func TestSerialRegisterRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		lcr       byte // written first
		reg       uint64
		write     byte
		want      byte
		wantOther map[uint64]byte // other registers after the write (DLAB cleared)
	}{
		{"SCR", 0, uartSCR, 0xa5, 0xa5, nil},
		{"LCR", 0, uartLCR, 0x1b, 0x1b, nil},
		{"IER keeps 4 bits", 0, uartIER, 0xff, 0x0f, nil},
		{"MCR keeps 5 bits", 0, uartMCR, 0xff, 0x1f, nil},
		{"DLL under DLAB", lcrDLAB | 3, uartDLL, 0x01, 0x01, map[uint64]byte{uartIER: 0}},
		{"DLM under DLAB", lcrDLAB | 3, uartDLM, 0x02, 0x02, map[uint64]byte{uartIER: 0}},
		{"LSR write ignored", 0, uartLSR, 0x00, lsrTHRE | lsrTEMT, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, out, _ := newTestSerial()
			wr(s, uartLCR, tc.lcr)
			wr(s, tc.reg, tc.write)
			if got := rd(s, tc.reg); got != tc.want {
				t.Fatalf("read back %#x, want %#x", got, tc.want)
			}
			wr(s, uartLCR, tc.lcr&^lcrDLAB)
			for reg, want := range tc.wantOther {
				if got := rd(s, reg); got != want {
					t.Errorf("reg %d = %#x after DLAB write, want %#x", reg, got, want)
				}
			}
			if out.String() != "" {
				t.Errorf("register write produced output %q", out.String())
			}
		})
	}
}

func TestSerialDLAB(t *testing.T) {
	s, out, _ := newTestSerial()
	wr(s, uartLCR, lcrDLAB|0x03)
	wr(s, uartDLL, 0x01)
	wr(s, uartDLM, 0x00)
	if got := rd(s, uartRBR); got != 0x01 {
		t.Fatalf("DLL = %#x, want 1", got)
	}
	s.Enqueue([]byte("x"))
	if got := rd(s, uartRBR); got != 0x01 {
		t.Fatalf("RBR under DLAB = %#x, want DLL 1", got)
	}
	wr(s, uartLCR, 0x03)
	wr(s, uartTHR, 'A')
	if got := rd(s, uartRBR); got != 'x' {
		t.Fatalf("RBR = %q, want 'x' (DLAB read must not consume)", got)
	}
	if out.String() != "A" {
		t.Fatalf("out = %q, want \"A\"", out.String())
	}
	wr(s, uartLCR, lcrDLAB)
	if got := rd(s, uartDLL); got != 0x01 {
		t.Fatalf("DLL after THR write = %#x, want 1", got)
	}
}

func TestSerialLSR(t *testing.T) {
	s, _, _ := newTestSerial()
	if got := rd(s, uartLSR); got != lsrTHRE|lsrTEMT {
		t.Fatalf("idle LSR = %#x", got)
	}
	s.Enqueue([]byte("ab"))
	for i, want := range []byte("ab") {
		if got := rd(s, uartLSR); got != lsrTHRE|lsrTEMT|lsrDR {
			t.Fatalf("LSR with data (%d) = %#x", i, got)
		}
		if got := rd(s, uartRBR); got != want {
			t.Fatalf("RBR = %q, want %q", got, want)
		}
	}
	if got := rd(s, uartLSR); got != lsrTHRE|lsrTEMT {
		t.Fatalf("LSR after drain = %#x", got)
	}
	wr(s, uartTHR, 'z')
	if got := rd(s, uartLSR); got&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
		t.Fatalf("LSR right after transmit = %#x, transmitter must be idle", got)
	}
}

func TestSerialEnqueueBound(t *testing.T) {
	s, _, irq := newTestSerial()
	wr(s, uartIER, ierRLS)
	in := make([]byte, SerialRXBufferSize+100)
	for i := range in {
		in[i] = byte(i * 7)
	}
	n := s.Enqueue(in)
	if n != SerialRXBufferSize {
		t.Fatalf("Enqueue accepted %d, want %d", n, SerialRXBufferSize)
	}
	if n := s.Enqueue([]byte{1}); n != 0 {
		t.Fatalf("Enqueue into full buffer accepted %d", n)
	}
	if st := s.Stats(); st.Dropped != 101 {
		t.Fatalf("Dropped = %d, want 101", st.Dropped)
	}
	if irq.n.Load() == 0 {
		t.Fatal("overrun raised no RLS interrupt")
	}
	if got := rd(s, uartIIR); got != iirRLS {
		t.Fatalf("IIR = %#x, want RLS %#x", got, iirRLS)
	}
	if got := rd(s, uartLSR); got&lsrOE == 0 {
		t.Fatalf("LSR = %#x, want OE after dropped input", got)
	}
	if got := rd(s, uartLSR); got&lsrOE != 0 {
		t.Fatalf("LSR = %#x, OE must clear on read", got)
	}
	for i := range SerialRXBufferSize {
		if got := rd(s, uartRBR); got != in[i] {
			t.Fatalf("byte %d = %#x, want %#x", i, got, in[i])
		}
	}
	if rd(s, uartLSR)&lsrDR != 0 {
		t.Fatal("DR still set after draining")
	}
	// The ring wraps: space is reusable.
	if n := s.Enqueue([]byte("again")); n != 5 {
		t.Fatalf("Enqueue after drain accepted %d", n)
	}
	if st := s.Stats(); st.Received != SerialRXBufferSize {
		t.Fatalf("Received = %d, want %d", st.Received, SerialRXBufferSize)
	}
}

func TestSerialLoopback(t *testing.T) {
	s, out, irq := newTestSerial()
	wr(s, uartIER, ierRDA)
	before := irq.n.Load()
	wr(s, uartMCR, mcrLoop)
	for _, c := range []byte("hi") {
		wr(s, uartTHR, c)
	}
	if out.String() != "" {
		t.Fatalf("loopback leaked %q to out", out.String())
	}
	if irq.n.Load() == before {
		t.Fatal("loopback data raised no RX interrupt")
	}
	if got := rd(s, uartIIR); got != iirRDA {
		t.Fatalf("IIR = %#x, want RDA", got)
	}
	for _, want := range []byte("hi") {
		if got := rd(s, uartRBR); got != want {
			t.Fatalf("RBR = %q, want %q", got, want)
		}
	}
	wr(s, uartMCR, 0)
	wr(s, uartTHR, '!')
	if out.String() != "!" {
		t.Fatalf("out after leaving loopback = %q", out.String())
	}
}

func TestSerialLoopbackMSR(t *testing.T) {
	tests := []struct {
		mcr  byte
		want byte // MSR bits 4-7
	}{
		{mcrLoop, 0},
		{mcrLoop | mcrRTS, msrCTS},
		{mcrLoop | mcrDTR, msrDSR},
		{mcrLoop | mcrOUT1, msrRI},
		{mcrLoop | mcrOUT2, msrDCD},
		{mcrLoop | mcrRTS | mcrOUT2, msrCTS | msrDCD}, // Linux's probe expects 0x90
		{mcrLoop | 0x0f, 0xf0},
		{0x0f, msrCTS | msrDSR | msrDCD}, // not loopback: fixed lines
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("mcr=%#x", tc.mcr), func(t *testing.T) {
			s, _, _ := newTestSerial()
			wr(s, uartMCR, tc.mcr)
			rd(s, uartMSR) // clear deltas
			if got := rd(s, uartMSR); got != tc.want {
				t.Fatalf("MSR = %#x, want %#x", got, tc.want)
			}
		})
	}
}

func TestSerialMSRDeltas(t *testing.T) {
	s, _, irq := newTestSerial()
	wr(s, uartMCR, mcrLoop|mcrOUT1) // RI on; CTS, DSR, DCD drop
	wr(s, uartIER, ierMS)           // enabling with deltas pending raises
	if irq.n.Load() != 1 {
		t.Fatalf("triggers = %d, want 1", irq.n.Load())
	}
	if got := rd(s, uartIIR); got != iirMS {
		t.Fatalf("IIR = %#x, want modem status", got)
	}
	if got := rd(s, uartMSR); got != msrRI|msrDCTS|msrDDSR|msrDDCD {
		t.Fatalf("MSR = %#x", got)
	}
	if got := rd(s, uartIIR); got != iirNone {
		t.Fatalf("IIR after MSR read = %#x", got)
	}
	wr(s, uartMCR, mcrLoop) // RI trailing edge
	if got := rd(s, uartMSR); got != msrTERI {
		t.Fatalf("MSR after RI falls = %#x, want TERI", got)
	}
	if irq.n.Load() != 2 {
		t.Fatalf("triggers = %d, want 2", irq.n.Load())
	}
}

func TestSerialIIRPriority(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *Serial)
		want  []byte // successive IIR reads after setup
	}{
		{"nothing enabled", func(s *Serial) { s.Enqueue([]byte("a")) }, []byte{iirNone}},
		{"RX data", func(s *Serial) { wr(s, uartIER, ierRDA); s.Enqueue([]byte("a")) }, []byte{iirRDA, iirRDA}},
		{"THRE acknowledged by IIR read", func(s *Serial) { wr(s, uartIER, ierTHRE) }, []byte{iirTHRE, iirNone}},
		{"RX above THRE", func(s *Serial) {
			wr(s, uartIER, ierRDA|ierTHRE)
			s.Enqueue([]byte("a"))
		}, []byte{iirRDA, iirRDA}},
		{"RLS above RX", func(s *Serial) {
			wr(s, uartIER, ierRDA|ierRLS|ierTHRE|ierMS)
			s.Enqueue(make([]byte, SerialRXBufferSize+1))
		}, []byte{iirRLS}},
		{"THRE above MS", func(s *Serial) {
			wr(s, uartMCR, mcrLoop)
			wr(s, uartIER, ierTHRE|ierMS)
		}, []byte{iirTHRE, iirMS, iirMS}},
		{"FIFO bits", func(s *Serial) {
			wr(s, uartFCR, fcrEnable)
			wr(s, uartIER, ierTHRE)
		}, []byte{iirFIFOs | iirTHRE, iirFIFOs | iirNone}},
		{"THRE after each transmitted byte", func(s *Serial) {
			wr(s, uartIER, ierTHRE)
			rd(s, uartIIR)
			wr(s, uartTHR, 'x')
		}, []byte{iirTHRE, iirNone}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newTestSerial()
			tc.setup(s)
			for i, want := range tc.want {
				if got := rd(s, uartIIR); got != want {
					t.Fatalf("IIR read %d = %#x, want %#x", i, got, want)
				}
			}
		})
	}
}

func TestSerialIIRAfterDrainAndOverrun(t *testing.T) {
	s, _, _ := newTestSerial()
	wr(s, uartIER, ierRDA|ierRLS|ierTHRE)
	s.Enqueue(make([]byte, SerialRXBufferSize+1))
	steps := []struct {
		do   func()
		want byte
	}{
		{func() {}, iirRLS},
		{func() { rd(s, uartLSR) }, iirRDA},
		{func() {
			for rd(s, uartLSR)&lsrDR != 0 {
				rd(s, uartRBR)
			}
		}, iirTHRE},
		{func() {}, iirNone}, // the previous IIR read acknowledged THRE
	}
	for i, st := range steps {
		st.do()
		if got := rd(s, uartIIR); got != st.want {
			t.Fatalf("step %d: IIR = %#x, want %#x", i, got, st.want)
		}
	}
}

func TestSerialInterrupts(t *testing.T) {
	tests := []struct {
		name string
		do   func(s *Serial)
		want int64
	}{
		{"no IER, input", func(s *Serial) { s.Enqueue([]byte("abc")) }, 0},
		{"no IER, output", func(s *Serial) { wr(s, uartTHR, 'a') }, 0},
		{"RDA enabled, one Enqueue", func(s *Serial) { wr(s, uartIER, ierRDA); s.Enqueue([]byte("abc")) }, 1},
		{"RDA enabled, empty Enqueue", func(s *Serial) { wr(s, uartIER, ierRDA); s.Enqueue(nil) }, 0},
		{"RDA enabled with input queued", func(s *Serial) { s.Enqueue([]byte("a")); wr(s, uartIER, ierRDA) }, 1},
		{"RDA enabled, nothing queued", func(s *Serial) { wr(s, uartIER, ierRDA) }, 0},
		{"THRE enable", func(s *Serial) { wr(s, uartIER, ierTHRE) }, 1},
		{"THRE rewrite does not re-raise", func(s *Serial) { wr(s, uartIER, ierTHRE); wr(s, uartIER, ierTHRE) }, 1},
		{"THRE toggle re-raises", func(s *Serial) {
			wr(s, uartIER, ierTHRE)
			rd(s, uartIIR)
			wr(s, uartIER, 0)
			wr(s, uartIER, ierTHRE)
		}, 2},
		{"THRE per byte", func(s *Serial) {
			wr(s, uartIER, ierTHRE)
			for _, c := range []byte("four") {
				wr(s, uartTHR, c)
			}
		}, 5},
		{"DLL write is not a transmit", func(s *Serial) {
			wr(s, uartIER, ierTHRE)
			wr(s, uartLCR, lcrDLAB)
			wr(s, uartDLL, 1)
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, irq := newTestSerial()
			tc.do(s)
			if got := irq.n.Load(); got != tc.want {
				t.Fatalf("triggers = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestSerialLinuxProbe replays the register checks Linux's 8250 driver makes
// before trusting a port (existence test, loopback MSR, FIFO detection, the
// THRE re-assertion test).
func TestSerialLinuxProbe(t *testing.T) {
	s, _, _ := newTestSerial()
	wr(s, uartIER, 0)
	if got := rd(s, uartIER); got != 0 {
		t.Fatalf("IER after 0 = %#x", got)
	}
	wr(s, uartIER, 0x0f)
	if got := rd(s, uartIER); got != 0x0f {
		t.Fatalf("IER after 0x0f = %#x", got)
	}
	wr(s, uartIER, 0)
	wr(s, uartMCR, mcrLoop|0x0a)
	if got := rd(s, uartMSR) & 0xf0; got != 0x90 {
		t.Fatalf("loopback MSR = %#x, want 0x90", got)
	}
	wr(s, uartMCR, 0)
	wr(s, uartFCR, fcrEnable)
	if got := rd(s, uartIIR) >> 6; got != 3 {
		t.Fatalf("IIR>>6 = %d, want 3 (16550A)", got)
	}
	// An Xscale-style IER bit 6 must not stick.
	wr(s, uartIER, 0x40)
	if rd(s, uartIER)&0x40 != 0 {
		t.Fatal("IER bit 6 stuck")
	}
	// THRE re-assertion: enable, acknowledge, disable, enable again.
	wr(s, uartIER, ierTHRE)
	if got := rd(s, uartIIR) &^ iirFIFOs; got != iirTHRE {
		t.Fatalf("first IIR = %#x, want THRE", got)
	}
	wr(s, uartIER, 0)
	wr(s, uartIER, ierTHRE)
	if got := rd(s, uartIIR) &^ iirFIFOs; got != iirTHRE {
		t.Fatalf("IIR after re-enable = %#x, want THRE (no UART_BUG_THRE)", got)
	}
	if got := rd(s, uartLSR); got == 0xff || got&lsrTEMT == 0 {
		t.Fatalf("LSR = %#x", got)
	}
}

func TestSerialFCR(t *testing.T) {
	tests := []struct {
		name     string
		fcrs     []byte
		wantData bool
	}{
		{"clear RX", []byte{fcrEnable, fcrEnable | fcrClearRX}, false},
		{"clear TX only", []byte{fcrEnable, fcrEnable | fcrClearTX}, true},
		{"enable toggles empty FIFO", []byte{fcrEnable, 0}, false},
		{"rewrite same", []byte{fcrEnable, fcrEnable}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newTestSerial()
			wr(s, uartFCR, tc.fcrs[0])
			s.Enqueue([]byte("abc"))
			for _, v := range tc.fcrs[1:] {
				wr(s, uartFCR, v)
			}
			if got := rd(s, uartLSR)&lsrDR != 0; got != tc.wantData {
				t.Fatalf("DR = %v, want %v", got, tc.wantData)
			}
		})
	}
}

func TestSerialMultiByteAccess(t *testing.T) {
	s, out, _ := newTestSerial()
	s.Write(uartTHR, []byte{'Q', ierRDA}) // THR then IER
	if out.String() != "Q" || rd(s, uartIER) != ierRDA {
		t.Fatalf("out %q IER %#x", out.String(), rd(s, uartIER))
	}
	wr(s, uartSCR, 0x42)
	buf := []byte{0, 0, 0, 0}
	s.Read(uartMSR, buf) // MSR, SCR, then past the end
	if buf[1] != 0x42 || buf[2] != 0xff || buf[3] != 0xff {
		t.Fatalf("read = % x", buf)
	}
	s.Write(6, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}) // runs past SCR: ignored
	s.Write(1<<63, []byte{1})
	s.Read(^uint64(0), buf)
	if rd(s, uartSCR) != 2 {
		t.Fatalf("SCR = %#x, want 2", rd(s, uartSCR))
	}
}

type failWriter struct{ calls atomic.Int64 }

var errBroken = errors.New("broken pipe")

func (f *failWriter) Write(p []byte) (int, error) {
	f.calls.Add(1)
	return 0, errBroken
}

func TestSerialOutputErrors(t *testing.T) {
	fw := &failWriter{}
	irq := &countIRQ{err: errors.New("irqfd gone")}
	s := NewSerial(fw, irq)
	wr(s, uartIER, ierTHRE)
	for _, c := range []byte("abc") {
		wr(s, uartTHR, c)
	}
	st := s.Stats()
	if fw.calls.Load() != 3 || st.WriteErrors != 3 || st.Transmitted != 3 {
		t.Fatalf("calls %d stats %+v, want every byte attempted and counted", fw.calls.Load(), st)
	}
	if st.InterruptErrors != 4 {
		t.Fatalf("InterruptErrors = %d, want 4", st.InterruptErrors)
	}
	if s.Err() == nil {
		t.Fatal("Err() = nil after failures")
	}
	// Nil writer and nil interrupt are allowed.
	s2 := NewSerial(nil, nil)
	wr(s2, uartIER, 0x0f)
	wr(s2, uartTHR, 'x')
	s2.Enqueue([]byte("y"))
	if rd(s2, uartRBR) != 'y' || s2.Err() != nil {
		t.Fatal("nil writer/interrupt serial misbehaves")
	}
}

func TestSerialConcurrent(t *testing.T) {
	s, out, _ := newTestSerial()
	wr(s, uartIER, ierTHRE|ierRDA)
	const writers, per = 4, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range per {
				wr(s, uartTHR, byte('a'+w))
				rd(s, uartLSR)
				rd(s, uartIIR)
			}
		})
	}
	wg.Go(func() {
		for range per {
			s.Enqueue([]byte("in"))
			rd(s, uartRBR)
		}
	})
	wg.Wait()
	got := out.String()
	if len(got) != writers*per {
		t.Fatalf("out has %d bytes, want %d", len(got), writers*per)
	}
	counts := make([]int, writers)
	for i := 0; i < len(got); i++ {
		c := got[i]
		if c < 'a' || c >= 'a'+writers {
			t.Fatalf("unexpected byte %q", c)
		}
		counts[c-'a']++
	}
	for w, n := range counts {
		if n != per {
			t.Fatalf("writer %d: %d bytes, want %d", w, n, per)
		}
	}
	if st := s.Stats(); st.Transmitted != writers*per {
		t.Fatalf("Transmitted = %d", st.Transmitted)
	}
}

// TestSerialOutputOrderOneWriter checks a single vCPU's bytes arrive in
// order, also across a concurrent Enqueue.
func TestSerialOutputOrderOneWriter(t *testing.T) {
	s, out, _ := newTestSerial()
	msg := []byte("The quick brown fox jumps over the lazy dog\r\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			s.Enqueue([]byte("k"))
		}
	}()
	for _, c := range msg {
		wr(s, uartTHR, c)
	}
	<-done
	if out.String() != string(msg) {
		t.Fatalf("out = %q", out.String())
	}
}
