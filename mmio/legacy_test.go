package mmio

import (
	"errors"
	"sync/atomic"
	"testing"
)

func TestDebugExit(t *testing.T) {
	tests := []struct {
		name   string
		offset uint64
		data   []byte
		want   []uint8 // codes passed to onExit
	}{
		{"zero", 0, []byte{0}, []uint8{0}},
		{"one", 0, []byte{1}, []uint8{1}},
		{"max", 0, []byte{0xff}, []uint8{0xff}},
		{"word takes low byte", 0, []byte{0x2a, 0x01}, []uint8{0x2a}},
		{"offset 1 ignored", 1, []byte{7}, nil},
		{"empty ignored", 0, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint8
			d := NewDebugExit(func(c uint8) { got = append(got, c) })
			d.Write(tc.offset, tc.data)
			if len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
				t.Fatalf("onExit calls %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDebugExitOnBus(t *testing.T) {
	var code atomic.Int32
	code.Store(-1)
	bus := NewBus("pio")
	if err := bus.Insert(DebugExitPort, DebugExitSize, NewDebugExit(func(c uint8) { code.Store(int32(c)) })); err != nil {
		t.Fatal(err)
	}
	buf := []byte{0x55}
	if err := bus.Read(DebugExitPort, buf); err != nil || buf[0] != 0 {
		t.Fatalf("read = %#x, %v; want 0", buf[0], err)
	}
	if code.Load() != -1 {
		t.Fatal("read triggered exit")
	}
	if err := bus.Write(DebugExitPort, []byte{3}); err != nil {
		t.Fatal(err)
	}
	if code.Load() != 3 {
		t.Fatalf("exit code %d, want 3", code.Load())
	}
	// Nil callback: writes are harmless.
	NewDebugExit(nil).Write(0, []byte{1})
}

func TestSink(t *testing.T) {
	for _, v := range []byte{0xff, 0x20, 0} {
		s := NewSink(v)
		buf := []byte{1, 2, 3, 4}
		s.Write(0, buf)
		s.Read(3, buf)
		for i, b := range buf {
			if b != v {
				t.Fatalf("sink(%#x) byte %d = %#x", v, i, b)
			}
		}
	}
}

// kbc drives an I8042 through a bus, as the guest would.
type kbc struct {
	t   *testing.T
	bus *Bus
}

func (k kbc) in(port uint64) byte {
	k.t.Helper()
	b := []byte{0}
	if err := k.bus.Read(port, b); err != nil {
		k.t.Fatal(err)
	}
	return b[0]
}

func (k kbc) out(port uint64, v byte) {
	k.t.Helper()
	if err := k.bus.Write(port, []byte{v}); err != nil {
		k.t.Fatal(err)
	}
}

// command sends a controller command (and parameters), then polls for n
// reply bytes the way Linux's i8042_command does, failing on a timeout.
func (k kbc) command(cmd byte, params []byte, n int) []byte {
	k.t.Helper()
	if k.in(I8042CommandPort)&kbcStatusIBF != 0 {
		k.t.Fatal("input buffer full before command")
	}
	k.out(I8042CommandPort, cmd)
	for _, p := range params {
		k.out(I8042DataPort, p)
	}
	var got []byte
	for range n {
		ok := false
		for range 100 {
			if k.in(I8042CommandPort)&kbcStatusOBF != 0 {
				ok = true
				break
			}
		}
		if !ok {
			k.t.Fatalf("command %#x: reply timeout", cmd)
		}
		got = append(got, k.in(I8042DataPort))
	}
	return got
}

func newKBC(t *testing.T) (kbc, *I8042, *atomic.Int32) {
	var resets atomic.Int32
	dev := NewI8042(func() { resets.Add(1) })
	bus := NewBus("pio")
	if err := dev.Attach(bus); err != nil {
		t.Fatal(err)
	}
	return kbc{t: t, bus: bus}, dev, &resets
}

func TestI8042Reset(t *testing.T) {
	tests := []struct {
		name  string
		do    func(k kbc)
		reset int32
	}{
		{"0xFE", func(k kbc) { k.out(I8042CommandPort, 0xfe) }, 1},
		{"0xF0 pulses all lines", func(k kbc) { k.out(I8042CommandPort, 0xf0) }, 1},
		{"0xFF pulses nothing", func(k kbc) { k.out(I8042CommandPort, 0xff) }, 0},
		{"0xFE on data port is not a command", func(k kbc) { k.out(I8042DataPort, 0xfe) }, 0},
		{"output port bit 0 cleared", func(k kbc) { k.out(I8042CommandPort, 0xd1); k.out(I8042DataPort, 0xde) }, 1},
		{"output port bit 0 kept", func(k kbc) { k.out(I8042CommandPort, 0xd1); k.out(I8042DataPort, 0xdf) }, 0},
		{"two resets", func(k kbc) { k.out(I8042CommandPort, 0xfe); k.out(I8042CommandPort, 0xfe) }, 2},
		{"Linux reboot=k", func(k kbc) {
			// kb_wait: poll until the input buffer is empty, then 0xFE.
			for range 10 {
				if k.in(I8042CommandPort)&kbcStatusIBF == 0 {
					break
				}
			}
			k.out(I8042CommandPort, 0xfe)
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, dev, resets := newKBC(t)
			tc.do(k)
			if got := resets.Load(); got != tc.reset {
				t.Fatalf("onReset called %d times, want %d", got, tc.reset)
			}
			if got := dev.Resets(); got != uint64(tc.reset) {
				t.Fatalf("Resets() = %d, want %d", got, tc.reset)
			}
		})
	}
}

func TestI8042Commands(t *testing.T) {
	tests := []struct {
		name   string
		cmd    byte
		params []byte
		want   []byte
	}{
		{"self test", kbcCmdSelfTest, nil, []byte{0x55}},
		{"keyboard port test", kbcCmdKbdTest, nil, []byte{0x00}},
		{"aux port test", kbcCmdAuxTest, nil, []byte{kbcAuxClockLow}},
		{"read CTR", kbcCmdReadCtr, nil, []byte{kbcCtrKbdInt | kbcCtrSys | kbcCtrXlate}},
		{"read output port", kbcCmdReadOutPort, nil, []byte{kbcOutPortReset | kbcOutPortA20}},
		{"echo as keyboard", kbcCmdWriteKbdOut, []byte{0x5a}, []byte{0x5a}},
		{"aux loop", kbcCmdWriteAuxOut, []byte{0xa5}, []byte{0xa5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, _, _ := newKBC(t)
			got := k.command(tc.cmd, tc.params, len(tc.want))
			if string(got) != string(tc.want) {
				t.Fatalf("reply % x, want % x", got, tc.want)
			}
			if k.in(I8042CommandPort)&kbcStatusOBF != 0 {
				t.Fatal("output buffer still full after reading the reply")
			}
		})
	}
}

func TestI8042CommandByte(t *testing.T) {
	k, _, _ := newKBC(t)
	k.command(kbcCmdWriteCtr, []byte{0x56}, 0)
	if got := k.command(kbcCmdReadCtr, nil, 1)[0]; got != 0x56 {
		t.Fatalf("CTR = %#x, want 0x56", got)
	}
	k.command(kbcCmdAuxDisable, nil, 0)
	if got := k.command(kbcCmdReadCtr, nil, 1)[0]; got&kbcCtrAuxDis == 0 {
		t.Fatalf("CTR = %#x after aux disable", got)
	}
	k.command(kbcCmdAuxEnable, nil, 0)
	k.command(kbcCmdKbdDisable, nil, 0)
	if got := k.command(kbcCmdReadCtr, nil, 1)[0]; got&kbcCtrAuxDis != 0 || got&kbcCtrKbdDis == 0 {
		t.Fatalf("CTR = %#x after aux enable, kbd disable", got)
	}
	// A data byte with no command pending goes to the (absent) keyboard.
	k.out(I8042DataPort, 0xf2)
	if k.in(I8042CommandPort)&kbcStatusOBF != 0 {
		t.Fatal("absent keyboard answered")
	}
}

func TestI8042Status(t *testing.T) {
	k, _, _ := newKBC(t)
	st := k.in(I8042CommandPort)
	if st&(kbcStatusOBF|kbcStatusIBF) != 0 {
		t.Fatalf("idle status %#x: buffers must be empty or Linux's flush/wait stalls", st)
	}
	// Linux's i8042_flush: read data while OBF, bounded.
	k.out(I8042CommandPort, kbcCmdWriteAuxOut)
	k.out(I8042DataPort, 0x11)
	st = k.in(I8042CommandPort)
	if st&(kbcStatusOBF|kbcStatusAuxData) != kbcStatusOBF|kbcStatusAuxData {
		t.Fatalf("status %#x, want OBF|AUXDATA", st)
	}
	flushed := 0
	for k.in(I8042CommandPort)&kbcStatusOBF != 0 && flushed < 32 {
		k.in(I8042DataPort)
		flushed++
	}
	if flushed != 1 {
		t.Fatalf("flushed %d bytes, want 1", flushed)
	}
	// Queue overflow drops replies, never grows without bound.
	for range 100 {
		k.out(I8042CommandPort, kbcCmdSelfTest)
	}
	n := 0
	for k.in(I8042CommandPort)&kbcStatusOBF != 0 {
		k.in(I8042DataPort)
		n++
		if n > 1000 {
			t.Fatal("output buffer never empties")
		}
	}
	if n != kbcOutQueueLimit {
		t.Fatalf("%d replies queued, want %d", n, kbcOutQueueLimit)
	}
}

func TestI8042AttachConflict(t *testing.T) {
	bus := NewBus("pio")
	if err := bus.Insert(I8042CommandPort, 1, NewSink(0)); err != nil {
		t.Fatal(err)
	}
	err := NewI8042(nil).Attach(bus)
	if !errors.Is(err, ErrOverlap) {
		t.Fatalf("Attach = %v, want ErrOverlap", err)
	}
	if rs := bus.Ranges(); len(rs) != 1 {
		t.Fatalf("failed Attach left ranges %v", rs)
	}
	// Wide and misplaced accesses on the port devices do not panic.
	dev := NewI8042(nil)
	for _, d := range []Device{dev.DataPort(), dev.CommandPort()} {
		buf := make([]byte, 4)
		d.Read(0, buf)
		d.Read(3, buf)
		d.Write(5, buf)
		d.Write(0, nil)
		d.Read(0, nil)
	}
	dev.CommandPort().Write(0, []byte{0xfe}) // nil onReset
}
