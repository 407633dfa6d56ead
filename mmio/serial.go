package mmio

import (
	"io"
	"sync"
	"sync/atomic"
)

// Interrupt raises a device's interrupt line as an edge. The VMM implements
// it with an irqfd; Trigger must not block for long (it runs on a vCPU
// goroutine or on the goroutine feeding input).
type Interrupt interface {
	Trigger() error
}

// SerialRXBufferSize is how many input bytes a Serial holds for the guest
// before Enqueue starts dropping them.
const SerialRXBufferSize = 64 << 10

// Register offsets from the UART base.
const (
	uartRBR = 0 // read, DLAB=0: receive buffer
	uartTHR = 0 // write, DLAB=0: transmit holding
	uartDLL = 0 // DLAB=1: divisor latch low
	uartIER = 1 // DLAB=0: interrupt enable
	uartDLM = 1 // DLAB=1: divisor latch high
	uartIIR = 2 // read: interrupt identification
	uartFCR = 2 // write: FIFO control
	uartLCR = 3 // line control
	uartMCR = 4 // modem control
	uartLSR = 5 // line status
	uartMSR = 6 // modem status
	uartSCR = 7 // scratch
)

// Register bits.
const (
	ierRDA  = 0x01 // received data available (ERBFI)
	ierTHRE = 0x02 // transmitter holding register empty (ETBEI)
	ierRLS  = 0x04 // receiver line status (ELSI)
	ierMS   = 0x08 // modem status (EDSSI)
	ierMask = 0x0f // a 16550A keeps only these

	iirNone  = 0x01 // no interrupt pending
	iirRLS   = 0x06 // receiver line status (highest priority)
	iirRDA   = 0x04 // received data available
	iirTHRE  = 0x02 // transmitter holding register empty
	iirMS    = 0x00 // modem status (lowest priority)
	iirFIFOs = 0xc0 // FIFOs enabled

	fcrEnable  = 0x01
	fcrClearRX = 0x02
	fcrClearTX = 0x04
	fcrKeep    = 0xc9 // FIFO enable, DMA mode, RX trigger level; reset bits self-clear

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f

	lsrDR    = 0x01 // data ready
	lsrOE    = 0x02 // overrun error
	lsrTHRE  = 0x20 // transmit holding register empty
	lsrTEMT  = 0x40 // transmitter empty
	lsrError = 0x1e // OE|PE|FE|BI: cleared by reading LSR

	msrDCTS  = 0x01
	msrDDSR  = 0x02
	msrTERI  = 0x04
	msrDDCD  = 0x08
	msrCTS   = 0x10
	msrDSR   = 0x20
	msrRI    = 0x40
	msrDCD   = 0x80
	msrDelta = 0x0f
)

// Serial is a 16550A UART as Linux's 8250 driver and govmm's tiny kernels
// drive it at COM1 (port 0x3F8, IRQ 4). It implements Device over SerialSize
// ports.
//
// Transmission is instantaneous: a byte written to THR is passed to the
// output writer at once, so LSR always shows THRE|TEMT and a THRE interrupt
// (if enabled) follows every transmitted byte. Input is queued by Enqueue in
// a buffer of SerialRXBufferSize bytes; what does not fit is dropped and
// reported to the guest as an overrun (LSR.OE). In loopback mode (MCR bit 4)
// transmitted bytes go to the receive queue instead of the writer, and the
// modem status inputs follow the modem control outputs.
//
// Interrupts are edges, sent through Interrupt.Trigger whenever a source
// becomes pending while enabled in IER: input arrived (Enqueue, loopback), a
// byte was transmitted, IER enabled a source whose condition holds, an
// overrun, a modem-status change. The guest must therefore handle every
// pending source before returning from its handler (read IIR until it shows
// no interrupt, drain RBR while LSR.DR is set), as Linux does for ISA ports.
// MCR.OUT2 does not gate the line.
//
// Multi-byte accesses are split into byte accesses of consecutive
// registers, as the ISA bus would. FCR's receiver reset discards all queued
// input, as a real FIFO reset would; input enqueued before the guest
// initialises the port is therefore lost.
type Serial struct {
	irq Interrupt

	mu         sync.Mutex
	ier        byte
	lcr        byte
	mcr        byte
	fcr        byte
	scr        byte
	dll, dlm   byte
	lsrErr     byte // OE etc. until LSR is read
	msrDeltas  byte // MSR delta bits until MSR is read
	thrPending bool // THRE interrupt condition not yet acknowledged
	rx         rxRing

	// outMu is taken while mu is still held and released after the write,
	// so bytes reach out in the order their THR writes took mu, without
	// holding mu (and blocking Enqueue or other registers) across out.Write.
	outMu sync.Mutex
	out   io.Writer

	transmitted, received, dropped atomic.Uint64
	writeErrs, irqErrs             atomic.Uint64
	errMu                          sync.Mutex
	lastErr                        error
}

// NewSerial returns a UART in its reset state that writes transmitted bytes
// to out (nil discards them) and raises irq (nil: no interrupts). A write
// error from out is counted (Stats, Err) and never stops the UART.
func NewSerial(out io.Writer, irq Interrupt) *Serial {
	if out == nil {
		out = io.Discard
	}
	return &Serial{
		irq: irq,
		out: out,
		dll: 0x0c, // 9600 baud, what a BIOS typically leaves
		rx:  rxRing{buf: make([]byte, SerialRXBufferSize)},
	}
}

// SerialStats counts what went through a Serial.
type SerialStats struct {
	Transmitted     uint64 // bytes handed to the output writer
	Received        uint64 // bytes the guest read from RBR
	Dropped         uint64 // Enqueue bytes dropped because the buffer was full
	WriteErrors     uint64 // failed writes to the output writer
	InterruptErrors uint64 // failed Interrupt.Trigger calls
}

// Stats returns the counters. It never blocks on the output writer.
func (s *Serial) Stats() SerialStats {
	return SerialStats{
		Transmitted:     s.transmitted.Load(),
		Received:        s.received.Load(),
		Dropped:         s.dropped.Load(),
		WriteErrors:     s.writeErrs.Load(),
		InterruptErrors: s.irqErrs.Load(),
	}
}

// Err returns the most recent output-writer or interrupt error, or nil.
func (s *Serial) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.lastErr
}

func (s *Serial) setErr(err error) {
	s.errMu.Lock()
	s.lastErr = err
	s.errMu.Unlock()
}

// Enqueue queues input bytes for the guest to read from RBR and raises the
// receive interrupt if IER enables it. It returns how many bytes were
// queued; the rest did not fit in the buffer and were dropped, which the
// guest sees as an overrun error in LSR.
func (s *Serial) Enqueue(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	s.mu.Lock()
	n := s.rx.push(b)
	raise := n > 0 && s.ier&ierRDA != 0
	if n < len(b) {
		s.dropped.Add(uint64(len(b) - n))
		s.lsrErr |= lsrOE
		raise = raise || s.ier&ierRLS != 0
	}
	s.mu.Unlock()
	if raise {
		s.trigger()
	}
	return n
}

// Read reads the registers at offset, offset+1, ... into data. Bytes
// beyond the last register read as 0xff.
func (s *Serial) Read(offset uint64, data []byte) {
	s.mu.Lock()
	for i := range data {
		if offset >= SerialSize || uint64(i) >= SerialSize-offset {
			data[i] = 0xff
			continue
		}
		data[i] = s.readReg(offset + uint64(i))
	}
	s.mu.Unlock()
}

// Write writes data to the registers at offset, offset+1, ... Bytes beyond
// the last register are ignored.
func (s *Serial) Write(offset uint64, data []byte) {
	if offset >= SerialSize {
		return
	}
	var txBuf [SerialSize]byte
	tx := txBuf[:0]
	raise := false
	s.mu.Lock()
	for i, v := range data {
		if uint64(i) >= SerialSize-offset {
			break
		}
		var r bool
		tx, r = s.writeReg(offset+uint64(i), v, tx)
		raise = raise || r
	}
	if len(tx) > 0 {
		s.outMu.Lock()
	}
	s.mu.Unlock()
	if len(tx) > 0 {
		s.emit(tx)
		s.outMu.Unlock()
	}
	if raise {
		s.trigger()
	}
}

func (s *Serial) emit(b []byte) {
	s.transmitted.Add(uint64(len(b)))
	if _, err := s.out.Write(b); err != nil {
		s.writeErrs.Add(1)
		s.setErr(err)
	}
}

func (s *Serial) trigger() {
	if s.irq == nil {
		return
	}
	if err := s.irq.Trigger(); err != nil {
		s.irqErrs.Add(1)
		s.setErr(err)
	}
}

// iir computes the interrupt identification: the highest-priority enabled
// source that is pending.
func (s *Serial) iir() byte {
	id := byte(iirNone)
	switch {
	case s.ier&ierRLS != 0 && s.lsrErr != 0:
		id = iirRLS
	case s.ier&ierRDA != 0 && s.rx.n > 0:
		id = iirRDA
	case s.ier&ierTHRE != 0 && s.thrPending:
		id = iirTHRE
	case s.ier&ierMS != 0 && s.msrDeltas != 0:
		id = iirMS
	}
	if s.fcr&fcrEnable != 0 {
		id |= iirFIFOs
	}
	return id
}

// msrLines returns the modem status inputs (MSR bits 4-7). Outside loopback
// the UART reports a peer that is present and ready: CTS, DSR and DCD.
func (s *Serial) msrLines() byte {
	if s.mcr&mcrLoop == 0 {
		return msrCTS | msrDSR | msrDCD
	}
	var m byte
	if s.mcr&mcrRTS != 0 {
		m |= msrCTS
	}
	if s.mcr&mcrDTR != 0 {
		m |= msrDSR
	}
	if s.mcr&mcrOUT1 != 0 {
		m |= msrRI
	}
	if s.mcr&mcrOUT2 != 0 {
		m |= msrDCD
	}
	return m
}

// readReg reads one register; s.mu is held.
func (s *Serial) readReg(r uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch r {
	case uartRBR:
		if dlab {
			return s.dll
		}
		v, ok := s.rx.pop()
		if ok {
			s.received.Add(1)
		}
		return v
	case uartIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case uartIIR:
		id := s.iir()
		if id&^iirFIFOs == iirTHRE {
			// Reading IIR acknowledges a THRE interrupt it reports.
			s.thrPending = false
		}
		return id
	case uartLCR:
		return s.lcr
	case uartMCR:
		return s.mcr
	case uartLSR:
		v := byte(lsrTHRE|lsrTEMT) | s.lsrErr
		if s.rx.n > 0 {
			v |= lsrDR
		}
		s.lsrErr = 0
		return v
	case uartMSR:
		v := s.msrLines() | s.msrDeltas
		s.msrDeltas = 0
		return v
	case uartSCR:
		return s.scr
	}
	return 0xff
}

// writeReg writes one register; s.mu is held. A byte to transmit is
// appended to tx. raise reports that an enabled interrupt source became
// pending.
func (s *Serial) writeReg(r uint64, v byte, tx []byte) (_ []byte, raise bool) {
	dlab := s.lcr&lcrDLAB != 0
	switch r {
	case uartTHR:
		if dlab {
			s.dll = v
			break
		}
		if s.mcr&mcrLoop != 0 {
			if s.rx.pushByte(v) {
				raise = s.ier&ierRDA != 0
			} else {
				s.lsrErr |= lsrOE
				raise = s.ier&ierRLS != 0
			}
		} else {
			tx = append(tx, v)
		}
		// The byte left THR at once: THR is empty again.
		s.thrPending = true
		raise = raise || s.ier&ierTHRE != 0
	case uartIER:
		if dlab {
			s.dlm = v
			break
		}
		old := s.ier
		s.ier = v & ierMask
		on := s.ier &^ old
		if s.ier&ierTHRE == 0 {
			s.thrPending = false
		} else if on&ierTHRE != 0 {
			// Enabling ETBEI with THR empty (it always is) raises THRE,
			// even if an earlier one was acknowledged.
			s.thrPending = true
		}
		raise = on&ierTHRE != 0 ||
			(on&ierRDA != 0 && s.rx.n > 0) ||
			(on&ierRLS != 0 && s.lsrErr != 0) ||
			(on&ierMS != 0 && s.msrDeltas != 0)
	case uartFCR:
		if (v^s.fcr)&fcrEnable != 0 {
			// Switching the FIFOs on or off empties them.
			s.rx.reset()
		}
		if v&fcrClearRX != 0 {
			s.rx.reset()
		}
		// fcrClearTX: the transmitter is always empty.
		s.fcr = v & fcrKeep
	case uartLCR:
		s.lcr = v
	case uartMCR:
		before := s.msrLines()
		s.mcr = v & mcrMask
		after := s.msrLines()
		changed := before ^ after
		var d byte
		if changed&msrCTS != 0 {
			d |= msrDCTS
		}
		if changed&msrDSR != 0 {
			d |= msrDDSR
		}
		if before&msrRI != 0 && after&msrRI == 0 {
			d |= msrTERI
		}
		if changed&msrDCD != 0 {
			d |= msrDDCD
		}
		s.msrDeltas |= d
		raise = d != 0 && s.ier&ierMS != 0
	case uartLSR, uartMSR:
		// Read-only (factory test writes are ignored).
	case uartSCR:
		s.scr = v
	}
	return tx, raise
}

// rxRing is a fixed-capacity byte FIFO.
type rxRing struct {
	buf  []byte
	head int // index of the oldest byte
	n    int // bytes queued
}

// push appends as much of b as fits and returns how much did.
func (q *rxRing) push(b []byte) int {
	free := len(q.buf) - q.n
	if len(b) > free {
		b = b[:free]
	}
	tail := (q.head + q.n) % max(len(q.buf), 1)
	c := copy(q.buf[tail:], b)
	copy(q.buf, b[c:])
	q.n += len(b)
	return len(b)
}

func (q *rxRing) pushByte(v byte) bool {
	if q.n == len(q.buf) {
		return false
	}
	q.buf[(q.head+q.n)%len(q.buf)] = v
	q.n++
	return true
}

func (q *rxRing) pop() (byte, bool) {
	if q.n == 0 {
		return 0, false
	}
	v := q.buf[q.head]
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return v, true
}

func (q *rxRing) reset() { q.head, q.n = 0, 0 }
