package mmio

import (
	"fmt"
	"sync"
)

// i8042 status register bits.
const (
	kbcStatusOBF     = 0x01 // output buffer full: a byte waits at the data port
	kbcStatusIBF     = 0x02 // input buffer full: never, we consume at once
	kbcStatusSys     = 0x04 // system flag: POST passed
	kbcStatusCmd     = 0x08 // last write went to the command port
	kbcStatusUnlock  = 0x10 // keyboard not inhibited
	kbcStatusAuxData = 0x20 // the byte in the output buffer is from the aux port
)

// i8042 controller configuration byte ("command byte") bits.
const (
	kbcCtrKbdInt = 0x01
	kbcCtrSys    = 0x04
	kbcCtrKbdDis = 0x10
	kbcCtrAuxDis = 0x20
	kbcCtrXlate  = 0x40
)

// i8042 controller commands (written to the command port).
const (
	kbcCmdReadCtr      = 0x20 // 0x20-0x3f read internal RAM; 0x20 is the CTR
	kbcCmdWriteCtr     = 0x60 // 0x60-0x7f write internal RAM; 0x60 is the CTR
	kbcCmdAuxDisable   = 0xa7
	kbcCmdAuxEnable    = 0xa8
	kbcCmdAuxTest      = 0xa9
	kbcCmdSelfTest     = 0xaa
	kbcCmdKbdTest      = 0xab
	kbcCmdKbdDisable   = 0xad
	kbcCmdKbdEnable    = 0xae
	kbcCmdReadOutPort  = 0xd0
	kbcCmdWriteOutPort = 0xd1
	kbcCmdWriteKbdOut  = 0xd2 // next data byte comes back as keyboard data
	kbcCmdWriteAuxOut  = 0xd3 // next data byte comes back as aux data
	kbcCmdWriteAux     = 0xd4 // next data byte goes to the aux device
	kbcCmdPulseFirst   = 0xf0 // 0xf0-0xff: pulse output port bits whose command bit is 0
)

const (
	kbcSelfTestOK    = 0x55
	kbcPortTestOK    = 0x00
	kbcAuxClockLow   = 0x01 // aux port test answer: clock line stuck low
	kbcOutPortReset  = 0x01 // output port bit 0: CPU reset line, active low
	kbcOutPortA20    = 0x02
	kbcOutQueueLimit = 16
)

// I8042 is a minimal PS/2 keyboard controller with nothing plugged into it.
// It exists so that a guest can reset the machine through it (command 0xFE,
// how Linux reboots with reboot=k; also a pulse or a write of the output
// port with bit 0 clear) and so that Linux's i8042 probe finds a sane
// controller and moves on quickly:
//
//   - status: input buffer always empty (commands are consumed at once),
//     output buffer full only while a reply waits at the data port;
//   - 0x20/0x60 read/write the configuration byte, 0xAA self-test answers
//     0x55, 0xAB keyboard-port test answers 0x00, 0xA9 aux-port test
//     answers 0x01 (no usable aux port), 0xA7/0xA8/0xAD/0xAE toggle the
//     configuration byte's disable bits, 0xD0/0xD1 read/write the output
//     port, 0xD2/0xD3 echo the next data byte as keyboard/aux data;
//   - bytes sent to the keyboard or the aux device are dropped: no device
//     answers, so a driver probing for one times out.
//
// The controller has no interrupt lines: replies are meant to be polled.
//
// It decodes two separate one-byte ports, so it is inserted as two devices:
// DataPort at I8042DataPort (0x60) and CommandPort at I8042CommandPort
// (0x64); Attach does both. Ports 0x61-0x63 stay free for other devices
// (0x61 is the PC speaker / NMI status port, a Sink fits it).
type I8042 struct {
	onReset func()

	mu      sync.Mutex
	ctr     byte
	outPort byte
	cmdLast bool // last write went to the command port
	pending byte // command waiting for its data byte, 0 if none
	out     [kbcOutQueueLimit]kbcByte
	head, n int
	last    byte // last byte read from the data port
	resets  uint64
}

type kbcByte struct {
	v   byte
	aux bool
}

// NewI8042 returns a controller that calls onReset (if not nil) when the
// guest pulses the CPU reset line. onReset runs on the vCPU goroutine,
// without any lock held; it should ask the VM to stop, not wait for it.
func NewI8042(onReset func()) *I8042 {
	return &I8042{
		onReset: onReset,
		ctr:     kbcCtrKbdInt | kbcCtrSys | kbcCtrXlate,
		outPort: kbcOutPortReset | kbcOutPortA20,
	}
}

// DataPort returns the device for the data port (0x60), one byte wide.
func (k *I8042) DataPort() Device { return kbcPort{k: k, cmd: false} }

// CommandPort returns the device for the status/command port (0x64), one
// byte wide.
func (k *I8042) CommandPort() Device { return kbcPort{k: k, cmd: true} }

// Attach inserts DataPort at I8042DataPort and CommandPort at
// I8042CommandPort on the port-I/O bus b. On failure nothing stays inserted.
func (k *I8042) Attach(b *Bus) error {
	if err := b.Insert(I8042DataPort, 1, k.DataPort()); err != nil {
		return fmt.Errorf("attach i8042: %w", err)
	}
	if err := b.Insert(I8042CommandPort, 1, k.CommandPort()); err != nil {
		_ = b.Remove(I8042DataPort) // inserted just above: cannot fail
		return fmt.Errorf("attach i8042: %w", err)
	}
	return nil
}

// Resets returns how many times the guest pulsed the reset line.
func (k *I8042) Resets() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.resets
}

// kbcPort is one of the controller's two ports.
type kbcPort struct {
	k   *I8042
	cmd bool
}

func (p kbcPort) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	for i := range data {
		data[i] = 0xff
	}
	if offset != 0 {
		return
	}
	if p.cmd {
		data[0] = p.k.status()
	} else {
		data[0] = p.k.readData()
	}
}

func (p kbcPort) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) == 0 {
		return
	}
	var reset bool
	if p.cmd {
		reset = p.k.writeCommand(data[0])
	} else {
		reset = p.k.writeData(data[0])
	}
	if reset && p.k.onReset != nil {
		p.k.onReset()
	}
}

func (k *I8042) status() byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := byte(kbcStatusUnlock)
	if k.ctr&kbcCtrSys != 0 {
		s |= kbcStatusSys
	}
	if k.cmdLast {
		s |= kbcStatusCmd
	}
	if k.n > 0 {
		s |= kbcStatusOBF
		if k.out[k.head].aux {
			s |= kbcStatusAuxData
		}
	}
	return s
}

func (k *I8042) readData() byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.n > 0 {
		k.last = k.out[k.head].v
		k.head = (k.head + 1) % len(k.out)
		k.n--
	}
	// An empty output buffer reads back the last byte, as on hardware.
	return k.last
}

// reply queues a byte for the data port; mu is held. A full queue drops it.
func (k *I8042) reply(v byte, aux bool) {
	if k.n == len(k.out) {
		return
	}
	k.out[(k.head+k.n)%len(k.out)] = kbcByte{v: v, aux: aux}
	k.n++
}

// writeCommand handles a command byte and reports whether the CPU reset
// line was pulsed.
func (k *I8042) writeCommand(c byte) (reset bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cmdLast = true
	k.pending = 0
	switch {
	case c == kbcCmdReadCtr:
		k.reply(k.ctr, false)
	case c > kbcCmdReadCtr && c < kbcCmdWriteCtr:
		k.reply(0, false) // other internal RAM bytes: nothing stored
	case c >= kbcCmdWriteCtr && c <= 0x7f,
		c == kbcCmdWriteOutPort, c == kbcCmdWriteKbdOut,
		c == kbcCmdWriteAuxOut, c == kbcCmdWriteAux:
		k.pending = c
	case c == kbcCmdAuxDisable:
		k.ctr |= kbcCtrAuxDis
	case c == kbcCmdAuxEnable:
		k.ctr &^= kbcCtrAuxDis
	case c == kbcCmdAuxTest:
		k.reply(kbcAuxClockLow, false)
	case c == kbcCmdSelfTest:
		k.ctr |= kbcCtrSys
		k.reply(kbcSelfTestOK, false)
	case c == kbcCmdKbdTest:
		k.reply(kbcPortTestOK, false)
	case c == kbcCmdKbdDisable:
		k.ctr |= kbcCtrKbdDis
	case c == kbcCmdKbdEnable:
		k.ctr &^= kbcCtrKbdDis
	case c == kbcCmdReadOutPort:
		k.reply(k.outPort, false)
	case c >= kbcCmdPulseFirst:
		// Bits 0-3 clear select the output-port lines to pulse; bit 0 is
		// the CPU reset line (so 0xFE pulses reset, 0xFF nothing).
		if c&kbcOutPortReset == 0 {
			reset = true
		}
	}
	if reset {
		k.resets++
	}
	return reset
}

// writeData handles a data-port byte and reports whether it reset the CPU.
func (k *I8042) writeData(v byte) (reset bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cmdLast = false
	c := k.pending
	k.pending = 0
	switch {
	case c == kbcCmdWriteCtr:
		k.ctr = v
	case c > kbcCmdWriteCtr && c <= 0x7f:
		// Other internal RAM bytes: not stored.
	case c == kbcCmdWriteOutPort:
		k.outPort = v
		if v&kbcOutPortReset == 0 {
			reset = true
			// The line is pulsed, not held: the machine comes out of
			// reset with it released.
			k.outPort |= kbcOutPortReset
		}
	case c == kbcCmdWriteKbdOut:
		k.reply(v, false)
	case c == kbcCmdWriteAuxOut:
		k.reply(v, true)
	default:
		// To the aux device (0xD4) or the keyboard: nothing is plugged in.
	}
	if reset {
		k.resets++
	}
	return reset
}
