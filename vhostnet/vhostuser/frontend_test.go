package vhostuser

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/kvm/kvmtest"
	"golang.org/x/sys/unix"
)

// TestRoundTripEveryRequest drives every request through Frontend and Serve
// into the fake device, with and without REPLY_ACK, and checks what the
// device saw and what came back.
func TestRoundTripEveryRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		want ProtocolFeatures
	}{
		{"all features", SupportedProtocolFeatures},
		{"without REPLY_ACK", SupportedProtocolFeatures &^ ProtocolReplyAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkFDLeaks(t)
			dev := newFakeDevice()
			s := startServe(t, dev, dev, Options{})
			fe := s.fe

			features, proto, err := fe.NegotiateProtocolFeatures(tc.want)
			if err != nil {
				t.Fatalf("negotiate: %v", err)
			}
			if features != dev.features {
				t.Errorf("features = %#x, want %#x", features, dev.features)
			}
			if proto != tc.want {
				t.Errorf("protocol features = %v, want %v (LOG_SHMFD must not be offered)", proto, tc.want)
			}
			if fe.ProtocolFeatures() != tc.want {
				t.Errorf("ProtocolFeatures() = %v", fe.ProtocolFeatures())
			}
			mustOK := func(what string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
			mustOK("SetOwner", fe.SetOwner())
			mustOK("SetFeatures", fe.SetFeatures(1<<32|FeatureProtocolFeatures))
			if n, err := fe.GetQueueNum(); err != nil || n != 4 {
				t.Errorf("GetQueueNum = %d, %v; want 4", n, err)
			}
			if n, err := fe.GetMaxMemSlots(); err != nil || n != 32 {
				t.Errorf("GetMaxMemSlots = %d, %v; want 32", n, err)
			}

			mem := newMemfd(t, 0x3000)
			regions := []SharedMemoryRegion{
				{MemoryRegion: MemoryRegion{GuestPhysAddr: 0, Size: 0x1000, UserAddr: 0x7000_0000, MmapOffset: 0}, File: mem},
				{MemoryRegion: MemoryRegion{GuestPhysAddr: 0x10_0000, Size: 0x1000, UserAddr: 0x7000_2000, MmapOffset: 0x2000}, File: mem},
			}
			mustOK("SetMemTable", fe.SetMemTable(regions))
			mustOK("SetVringNum", fe.SetVringNum(1, 256))
			mustOK("SetVringBase", fe.SetVringBase(1, 5))
			addr := VringAddr{Index: 1, Desc: 0x7000_0000, Avail: 0x7000_0800, Used: 0x7000_2000}
			mustOK("SetVringAddr", fe.SetVringAddr(addr))

			kick, call, errfd := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)
			mustOK("SetVringKick", fe.SetVringKick(1, kick))
			mustOK("SetVringCall", fe.SetVringCall(1, call))
			mustOK("SetVringErr", fe.SetVringErr(1, errfd))
			mustOK("SetVringErr nil", fe.SetVringErr(1, nil))
			mustOK("SetVringEnable", fe.SetVringEnable(1, true))
			mustOK("SetMTU", fe.SetMTU(9000))
			mustOK("SendRARP", fe.SendRARP(net.HardwareAddr{2, 0, 0, 0, 0, 7}))
			mustOK("SetStatus", fe.SetStatus(0xf))
			if st, err := fe.GetStatus(); err != nil || st != 0xf {
				t.Errorf("GetStatus = %#x, %v; want 0xf", st, err)
			}
			mustOK("SetConfig", fe.SetConfig(2, []byte{0xaa, 0xbb}, ConfigWritable))
			if c, err := fe.GetConfig(1, 4); err != nil || !bytes.Equal(c, []byte{1, 0xaa, 0xbb, 4}) {
				t.Errorf("GetConfig = %x, %v; want 01aabb04", c, err)
			}
			extra := newMemfd(t, 0x1000)
			r3 := MemoryRegion{GuestPhysAddr: 0x20_0000, Size: 0x1000, UserAddr: 0x7100_0000}
			mustOK("AddMemReg", fe.AddMemReg(SharedMemoryRegion{MemoryRegion: r3, File: extra}))
			if n, err := fe.GetQueueNum(); err != nil || n != 4 { // synchronise
				t.Fatalf("GetQueueNum = %d, %v", n, err)
			}
			if n := len(dev.mem.Regions()); n != 3 {
				t.Errorf("device has %d regions after AddMemReg, want 3", n)
			}
			mustOK("RemMemReg", fe.RemMemReg(r3))
			mustOK("ResetDevice", fe.ResetDevice())
			if base, err := fe.GetVringBase(1); err != nil || base != 105 {
				t.Errorf("GetVringBase = %d, %v; want 105", base, err)
			}

			wantLog := strings.Join([]string{
				"GetFeatures", "GetProtocolFeatures", "SetProtocolFeatures" + itoa(uint64(tc.want)),
				"SetOwner", "SetFeatures" + itoa(1<<32|FeatureProtocolFeatures),
				"GetQueueNum", "GetMaxMemSlots", "SetMemTable2",
				"SetVringNum1 256", "SetVringBase1 5", "SetVringAddr1",
				"SetVringKick1 true", "SetVringCall1 true", "SetVringErr1 true", "SetVringErr1 false",
				"SetVringEnable1 true", "SetMTU9000", "SendRARP02:00:00:00:00:07",
				"SetStatus15", "GetStatus", "SetConfig2 [170 187] 0", "GetConfig1 4",
				"AddMemReg2097152", "GetQueueNum", "RemMemReg2097152", "ResetDevice", "GetVringBase1",
			}, "\n")
			if got := dev.callLog(); got != wantLog {
				t.Errorf("device calls:\n%s\nwant:\n%s", got, wantLog)
			}
			dev.mu.Lock()
			defer dev.mu.Unlock()
			if dev.ackProto != tc.want {
				t.Errorf("device saw protocol features %v, want %v", dev.ackProto, tc.want)
			}
			if n := len(dev.mem.Regions()); n != 2 {
				t.Errorf("device has %d regions after RemMemReg, want 2", n)
			}
			if dev.addrs[1] != addr {
				t.Errorf("device ring address %+v, want %+v", dev.addrs[1], addr)
			}
		})
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// TestSharedMemoryAndEventFDs checks the data-path plumbing for real: the
// back-end maps the memfds it received and reads/writes guest memory the
// front-end sees, and eventfds signal across the two processes' views.
func TestSharedMemoryAndEventFDs(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	s := startServe(t, dev, dev, Options{})
	fe := s.fe
	if _, _, err := fe.NegotiateProtocolFeatures(SupportedProtocolFeatures); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetOwner(); err != nil {
		t.Fatal(err)
	}

	const size = 0x4000
	mem := newMemfd(t, 2*size)
	local, err := unix.Mmap(int(mustFD(t, mem)), 0, 2*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(local)
	// Guest RAM: two regions of one file, the second at file offset size.
	regions := []SharedMemoryRegion{
		{MemoryRegion: MemoryRegion{GuestPhysAddr: 0, Size: size, UserAddr: 0x5000_0000, MmapOffset: 0}, File: mem},
		{MemoryRegion: MemoryRegion{GuestPhysAddr: 0x8000_0000, Size: size, UserAddr: 0x6000_0000, MmapOffset: size}, File: mem},
	}
	if err := fe.SetMemTable(regions); err != nil {
		t.Fatal(err)
	}
	copy(local[size+0x10:], "written by the front-end")

	got := make([]byte, 24)
	if err := dev.mem.ReadGuest(0x8000_0010, got); err != nil || string(got) != "written by the front-end" {
		t.Errorf("back-end read %q, %v", got, err)
	}
	if err := dev.mem.WriteGuest(0x20, []byte("from the back-end")); err != nil {
		t.Fatal(err)
	}
	if string(local[0x20:0x31]) != "from the back-end" {
		t.Errorf("front-end sees %q", local[0x20:0x31])
	}
	v := dev.mem.Acquire()
	us, err := v.UserSlice(0x6000_0010, 7)
	if err != nil || string(us) != "written" {
		t.Errorf("UserSlice = %q, %v", us, err)
	}
	if gpa, err := v.UserToGuest(0x6000_0010); err != nil || gpa != 0x8000_0010 {
		t.Errorf("UserToGuest = %#x, %v", gpa, err)
	}
	v.Release()

	kick, call := kvmtest.NewEventFD(t), kvmtest.NewEventFD(t)
	if err := fe.SetVringKick(0, kick); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetVringCall(0, call); err != nil {
		t.Fatal(err)
	}
	// The front-end's ioeventfd fires; the back-end's copy sees it.
	if err := kick.Signal(); err != nil {
		t.Fatal(err)
	}
	dev.mu.Lock()
	bk, bc := dev.kick[0], dev.call[0]
	dev.mu.Unlock()
	if bk == nil || bc == nil {
		t.Fatal("device did not keep kick/call eventfds")
	}
	if n, err := bk.Drain(); err != nil || n != 1 {
		t.Errorf("back-end kick drain = %d, %v; want 1", n, err)
	}
	// The back-end signals used buffers; the front-end's irqfd sees it.
	bc.Signal()
	bc.Signal()
	if n, err := call.Drain(); err != nil || n != 2 {
		t.Errorf("front-end call drain = %d, %v; want 2", n, err)
	}
}

func mustFD(t *testing.T, f *os.File) uintptr {
	fd, err := fileFD(f)
	if err != nil {
		t.Fatal(err)
	}
	return uintptr(fd)
}

func TestReplyAck(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	s := startServe(t, dev, dev, Options{})
	fe := s.fe
	if _, _, err := fe.NegotiateProtocolFeatures(ProtocolReplyAck | ProtocolMQ); err != nil {
		t.Fatal(err)
	}
	var be *BackendError
	if err := fe.SetVringNum(0, 256); !errors.As(err, &be) {
		t.Fatalf("ring request before SET_OWNER: %v, want BackendError", err)
	}
	if err := fe.SetOwner(); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetVringNum(0, 256); err != nil {
		t.Fatalf("acked request failed: %v", err)
	}
	dev.setFail("SetVringNum", errors.New("ring too large"))
	err := fe.SetVringNum(0, 1<<15)
	if !errors.As(err, &be) || be.Request != ReqSetVringNum || be.Status != 1 {
		t.Fatalf("err = %v, want BackendError for SET_VRING_NUM with status 1", err)
	}
	// Refusal is not a broken connection.
	if n, err := fe.GetQueueNum(); err != nil || n != 4 {
		t.Fatalf("GetQueueNum after refusal = %d, %v", n, err)
	}
	// A kick fd refused by the device is closed by it, not leaked.
	dev.setFail("SetVringKick", errors.New("no"))
	if err := fe.SetVringKick(0, kvmtest.NewEventFD(t)); !errors.As(err, &be) {
		t.Fatalf("SetVringKick err = %v, want BackendError", err)
	}
	// Gating on the back-end: STATUS was not negotiated. Send it raw-ish
	// through the front-end by faking the negotiated set.
	fe.mu.Lock()
	fe.proto |= ProtocolStatus
	fe.mu.Unlock()
	if err := fe.SetStatus(1); !errors.As(err, &be) {
		t.Fatalf("un-negotiated SET_STATUS err = %v, want BackendError", err)
	}
	if strings.Contains(dev.callLog(), "SetStatus") {
		t.Error("device saw SET_STATUS although STATUS was not negotiated")
	}
}

func TestHandlerErrorWithoutAckDropsConnection(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	s := startServe(t, dev, dev, Options{})
	if _, _, err := s.fe.NegotiateProtocolFeatures(ProtocolMQ); err != nil {
		t.Fatal(err)
	}
	if err := s.fe.SetOwner(); err != nil {
		t.Fatal(err)
	}
	dev.setFail("SetVringBase", errors.New("bad base"))
	if err := s.fe.SetVringBase(0, 1); err != nil {
		t.Fatalf("unacknowledged send failed locally: %v", err)
	}
	err := s.wait(t)
	if err == nil || !strings.Contains(err.Error(), "bad base") || !strings.Contains(err.Error(), "SET_VRING_BASE") {
		t.Fatalf("Serve returned %v, want the handler error naming SET_VRING_BASE", err)
	}
	if _, err := s.fe.GetFeatures(); err == nil {
		t.Fatal("request on a dropped connection succeeded")
	}
	if _, err := s.fe.GetFeatures(); !errors.Is(err, ErrBroken) {
		t.Fatalf("second request err = %v, want ErrBroken", err)
	}
}

func TestGetConfigRefused(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	s := startServe(t, dev, dev, Options{})
	if _, _, err := s.fe.NegotiateProtocolFeatures(ProtocolConfig); err != nil {
		t.Fatal(err)
	}
	_, err := s.fe.GetConfig(10, 100) // beyond the fake's 16 bytes
	var be *BackendError
	if !errors.As(err, &be) || be.Request != ReqGetConfig {
		t.Fatalf("err = %v, want BackendError", err)
	}
	if c, err := s.fe.GetConfig(0, 2); err != nil || !bytes.Equal(c, []byte{0, 1}) {
		t.Fatalf("GetConfig after refusal = %x, %v", c, err)
	}
}

func TestFrontendLocalChecks(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	s := startServe(t, dev, dev, Options{})
	fe := s.fe
	closedEv, _ := kvm.NewEventFD()
	closedEv.Close()
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"SetFeatures before GetFeatures", func() error { return fe.SetFeatures(1) }, ErrNotNegotiated},
		{"GetProtocolFeatures before GetFeatures", func() error { _, err := fe.GetProtocolFeatures(); return err }, ErrNotNegotiated},
		{"GetConfig without CONFIG", func() error { _, err := fe.GetConfig(0, 4); return err }, ErrNotNegotiated},
		{"GetQueueNum without MQ", func() error { _, err := fe.GetQueueNum(); return err }, ErrNotNegotiated},
		{"AddMemReg without slots", func() error {
			return fe.AddMemReg(SharedMemoryRegion{MemoryRegion: testRegion, File: newMemfd(t, 1)})
		}, ErrNotNegotiated},
		{"SetVringEnable before GetFeatures", func() error { return fe.SetVringEnable(0, true) }, ErrNotNegotiated},
		{"kick index too large", func() error { return fe.SetVringKick(256, nil) }, nil},
		{"closed eventfd", func() error { return fe.SetVringCall(0, closedEv) }, kvm.ErrClosed},
		{"too many regions", func() error { return fe.SetMemTable(make([]SharedMemoryRegion, 9)) }, nil},
		{"nil region file", func() error { return fe.SetMemTable(make([]SharedMemoryRegion, 1)) }, nil},
		{"bad MAC", func() error { return fe.SendRARP(net.HardwareAddr{1, 2}) }, nil},
		{"config window", func() error { return fe.SetConfig(4095, []byte{1, 2}, 0) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("call succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing above reached the device, and the connection still works.
	if log := dev.callLog(); log != "" {
		t.Errorf("device saw requests: %s", log)
	}
	features, err := fe.GetFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.SetFeatures(features | 1<<40); !errors.Is(err, ErrNotNegotiated) {
		t.Errorf("SetFeatures with unoffered bit: %v", err)
	}
	if _, err := fe.GetProtocolFeatures(); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetProtocolFeatures(ProtocolLogSHMFD); !errors.Is(err, ErrNotNegotiated) {
		t.Errorf("SetProtocolFeatures with unoffered bit: %v", err)
	}
}

// fakeBackend accepts one request on the far end of a socketpair and
// answers with the given raw bytes (nil: never answers).
func fakeBackend(t *testing.T, answer func(req *Message) []byte, files ...*os.File) (*Frontend, *net.UnixConn) {
	t.Helper()
	a, b := socketPair(t)
	fe := NewFrontend(a, Options{Timeout: 200 * time.Millisecond})
	t.Cleanup(func() { fe.Close() })
	go func() {
		m, err := ReadMessage(b, ToBackend)
		if err != nil {
			return
		}
		m.Close()
		if out := answer(m); out != nil {
			var oob []byte
			if len(files) > 0 {
				fd, _ := fileFD(files[0])
				oob = unix.UnixRights(fd)
			}
			b.WriteMsgUnix(out, oob, nil)
		}
	}()
	return fe, b
}

func TestMalformedReplies(t *testing.T) {
	checkFDLeaks(t)
	rep := Version1 | FlagReply
	tests := []struct {
		name   string
		answer func(*Message) []byte
		fd     bool
		check  func(*testing.T, error)
	}{
		{"short header", func(*Message) []byte { return []byte{1, 0, 0, 0, 5} }, false, func(t *testing.T, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("err = %v", err)
			}
		}},
		{"wrong request type", func(*Message) []byte { return rawMessage(ReqGetProtocolFeatures, rep, u64Bytes(1)) }, false, wantProtocolError("reply is for GET_PROTOCOL_FEATURES")},
		{"wrong size", func(*Message) []byte { return rawMessage(ReqGetFeatures, rep, []byte{1, 2, 3, 4}) }, false, wantProtocolError("expected 8")},
		{"missing reply flag", func(*Message) []byte { return rawMessage(ReqGetFeatures, Version1, u64Bytes(1)) }, false, wantProtocolError("reply flag")},
		{"need-reply in reply", func(*Message) []byte { return rawMessage(ReqGetFeatures, rep|FlagNeedReply, u64Bytes(1)) }, false, wantProtocolError("need-reply")},
		{"bad version", func(*Message) []byte { return rawMessage(ReqGetFeatures, FlagReply|2, u64Bytes(1)) }, false, wantProtocolError("version")},
		{"descriptor in reply", func(*Message) []byte { return rawMessage(ReqGetFeatures, rep, u64Bytes(1)) }, true, wantProtocolError("descriptors")},
		{"oversize", func(*Message) []byte {
			b := rawMessage(ReqGetFeatures, rep, nil)
			ne.PutUint32(b[8:], 1<<30)
			return b
		}, false, wantProtocolError("exceeds")},
		{"hang", func(*Message) []byte { return nil }, false, func(t *testing.T, err error) {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("err = %v, want deadline exceeded", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var files []*os.File
			if tc.fd {
				files = append(files, newMemfd(t, 1))
			}
			fe, peer := fakeBackend(t, tc.answer, files...)
			if tc.name == "short header" {
				// Close the back-end after its partial answer.
				go func() { time.Sleep(50 * time.Millisecond); peer.Close() }()
			}
			start := time.Now()
			_, err := fe.GetFeatures()
			if err == nil {
				t.Fatal("malformed reply accepted")
			}
			if !strings.Contains(err.Error(), "GET_FEATURES") {
				t.Errorf("error %q does not name the request", err)
			}
			tc.check(t, err)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v despite a 200ms timeout", d)
			}
			if _, err := fe.GetFeatures(); !errors.Is(err, ErrBroken) {
				t.Errorf("next request err = %v, want ErrBroken", err)
			}
		})
	}
}

func TestGetVringBaseWrongQueue(t *testing.T) {
	checkFDLeaks(t)
	fe, _ := fakeBackend(t, func(m *Message) []byte {
		b := make([]byte, 8)
		VringState{Index: 9, Num: 1}.put(b)
		return rawMessage(ReqGetVringBase, Version1|FlagReply, b)
	})
	if _, err := fe.GetVringBase(1); err == nil || !strings.Contains(err.Error(), "queue 9") {
		t.Fatalf("err = %v, want a protocol error about queue 9", err)
	}
}

// TestServeRejectsGarbage: a peer sending garbage makes Serve return a
// protocol error and close the connection.
func TestServeRejectsGarbage(t *testing.T) {
	checkFDLeaks(t)
	for _, tc := range []struct {
		name string
		buf  []byte
		fds  int
	}{
		{"random bytes", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0},
		{"reply flag", rawMessage(ReqGetFeatures, Version1|FlagReply, nil), 0},
		{"huge size", func() []byte { b := rawMessage(ReqSetOwner, Version1, nil); ne.PutUint32(b[8:], 0xffffffff); return b }(), 0},
		{"fd count", rawMessage(ReqSetMemTable, Version1, make([]byte, 8)), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketPair(t)
			dev := newFakeDevice()
			defer dev.close()
			done := make(chan error, 1)
			go func() { done <- Serve(context.Background(), b, dev) }()
			files := memfds(t, tc.fds)
			sendRaw(t, a, tc.buf, files...)
			closeFiles(files)
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return")
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Serve returned %v, want *ProtocolError", err)
			}
			// Closed with unread input, the peer may see a reset instead of EOF.
			a.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := a.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, unix.ECONNRESET)) {
				t.Errorf("peer read %d, %v; want EOF or reset (connection closed)", n, err)
			}
		})
	}
}

// TestServeRefusals covers requests Serve must refuse: with REPLY_ACK the
// refusal is a status of 1 and the session goes on; without it the
// connection is dropped.
func TestServeRefusals(t *testing.T) {
	checkFDLeaks(t)
	rq := func(r Request, p []byte) []byte { return rawMessage(r, Version1|FlagNeedReply, p) }
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	tests := []struct {
		name  string
		buf   []byte
		files []*os.File
		calls string // what the device must not see
	}{
		{"unimplemented SET_LOG_BASE", rq(ReqSetLogBase, make([]byte, 16)), []*os.File{newMemfd(t, 1)}, ""},
		{"unknown request", rq(Request(200), []byte{1}), nil, ""},
		{"kick that is not an eventfd", rq(ReqSetVringKick, u64Bytes(0)), []*os.File{pipeR}, "SetVringKick"},
		{"second SET_OWNER", rq(ReqSetOwner, nil), nil, "SetOwner\nSetOwner"},
		{"SET_STATUS not negotiated", rq(ReqSetStatus, u64Bytes(1)), nil, "SetStatus"},
		{"enable value 2", rq(ReqSetVringEnable, func() []byte { b := make([]byte, 8); VringState{Index: 0, Num: 2}.put(b); return b }()), nil, "SetVringEnable"},
		{"MTU too small", rq(ReqNetSetMTU, u64Bytes(10)), nil, "SetMTU"},
		{"unoffered feature bit", rq(ReqSetFeatures, u64Bytes(1<<50)), nil, "SetFeatures"},
		{"unoffered protocol bit", rq(ReqSetProtocolFeatures, u64Bytes(uint64(ProtocolPagefault|ProtocolReplyAck))), nil, "SetProtocolFeatures" + itoa(uint64(ProtocolPagefault|ProtocolReplyAck))},
	}
	for _, ack := range []bool{true, false} {
		for _, tc := range tests {
			name := tc.name + map[bool]string{true: "/ack", false: "/no ack"}[ack]
			t.Run(name, func(t *testing.T) {
				dev := newFakeDevice()
				s := startServe(t, dev, dev, Options{Timeout: 2 * time.Second})
				want := ProtocolMQ
				if ack {
					want |= ProtocolReplyAck
				}
				if _, _, err := s.fe.NegotiateProtocolFeatures(want); err != nil {
					t.Fatal(err)
				}
				if err := s.fe.SetOwner(); err != nil {
					t.Fatal(err)
				}
				// Inject the raw request under the Frontend's lock.
				s.fe.mu.Lock()
				sendRaw(t, s.fe.conn, tc.buf, tc.files...)
				var reply *Message
				var rerr error
				if ack {
					s.fe.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
					reply, rerr = ReadMessage(s.fe.conn, ToFrontend)
					s.fe.conn.SetReadDeadline(time.Time{})
				}
				s.fe.mu.Unlock()
				if ack {
					if rerr != nil {
						t.Fatalf("no status reply: %v (Serve: %v)", rerr, s.wait(t))
					}
					if reply.Payload != U64(1) {
						t.Fatalf("status = %v, want 1", reply.Payload)
					}
					if n, err := s.fe.GetQueueNum(); err != nil || n != 4 {
						t.Fatalf("session unusable after refusal: %d, %v", n, err)
					}
				} else {
					if err := s.wait(t); err == nil {
						t.Fatal("Serve kept going after an unreportable refusal")
					}
				}
				if tc.calls != "" && strings.Contains(dev.callLog(), tc.calls) {
					t.Errorf("device saw the refused request:\n%s", dev.callLog())
				}
			})
		}
	}
}

// TestBackendWithoutProtocolFeatures: a back-end that does not offer bit 30
// negotiates nothing, and protocol-feature requests are refused on both
// sides.
func TestBackendWithoutProtocolFeatures(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	dev.features = 1 << 32
	s := startServe(t, minimalHandler{dev}, dev, Options{})
	features, proto, err := s.fe.NegotiateProtocolFeatures(SupportedProtocolFeatures)
	if err != nil || features != 1<<32 || proto != 0 {
		t.Fatalf("negotiate = %#x, %v, %v", features, proto, err)
	}
	if err := s.fe.SetVringEnable(0, true); !errors.Is(err, ErrNotNegotiated) {
		t.Errorf("SetVringEnable err = %v", err)
	}
	// Force it: Serve drops the connection (GET_PROTOCOL_FEATURES must be
	// answered, and there is no valid answer).
	s.fe.mu.Lock()
	s.fe.backendFeatures |= FeatureProtocolFeatures
	s.fe.mu.Unlock()
	if _, err := s.fe.GetProtocolFeatures(); err == nil {
		t.Error("GET_PROTOCOL_FEATURES answered by a back-end without bit 30")
	}
	if err := s.wait(t); !errors.Is(err, ErrNotNegotiated) {
		t.Errorf("Serve returned %v, want ErrNotNegotiated", err)
	}
}

func TestMinimalHandlerAdvertisesOnlyWhatItImplements(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	s := startServe(t, minimalHandler{dev}, dev, Options{})
	if _, err := s.fe.GetFeatures(); err != nil {
		t.Fatal(err)
	}
	offered, err := s.fe.GetProtocolFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if want := ProtocolMQ | ProtocolReplyAck; offered != want {
		t.Fatalf("offered %v, want %v", offered, want)
	}
}

func TestServeContextCancel(t *testing.T) {
	checkFDLeaks(t)
	_, b := socketPair(t)
	dev := newFakeDevice()
	defer dev.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, b, dev) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve ignored cancellation")
	}
}

func TestServeReturnsNilOnDisconnect(t *testing.T) {
	checkFDLeaks(t)
	dev := newFakeDevice()
	s := startServe(t, dev, dev, Options{})
	if _, err := s.fe.GetFeatures(); err != nil {
		t.Fatal(err)
	}
	s.fe.Close()
	if err := s.wait(t); err != nil {
		t.Fatalf("Serve returned %v after a clean disconnect", err)
	}
	if err := s.fe.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.fe.GetFeatures(); !errors.Is(err, ErrClosed) {
		t.Errorf("request after Close: %v, want ErrClosed", err)
	}
}

func TestDialAndListen(t *testing.T) {
	checkFDLeaks(t)
	dir := t.TempDir()

	t.Run("front-end as client", func(t *testing.T) {
		path := filepath.Join(dir, "backend.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		dev := newFakeDevice()
		defer dev.close()
		done := make(chan error, 1)
		go func() {
			c, err := ln.AcceptUnix()
			if err != nil {
				done <- err
				return
			}
			done <- Serve(context.Background(), c, dev)
		}()
		fe, err := Dial(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if f, err := fe.GetFeatures(); err != nil || f != dev.features {
			t.Errorf("GetFeatures = %#x, %v", f, err)
		}
		fe.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	t.Run("front-end as server", func(t *testing.T) {
		path := filepath.Join(dir, "vmm.sock")
		l, err := Listen(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		dev := newFakeDevice()
		defer dev.close()
		done := make(chan error, 1)
		go func() {
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				done <- err
				return
			}
			done <- Serve(context.Background(), c, dev)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fe, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := fe.GetFeatures(); err != nil || n != dev.features {
			t.Errorf("GetFeatures = %#x, %v", n, err)
		}
		fe.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		// Accept gives up with its context, and the listener stays usable.
		ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel2()
		if _, err := l.Accept(ctx2); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Accept err = %v, want context.DeadlineExceeded", err)
		}
		go func() {
			if c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"}); err == nil {
				time.Sleep(100 * time.Millisecond)
				c.Close()
			}
		}()
		fe2, err := l.Accept(context.Background())
		if err != nil {
			t.Fatalf("Accept after a cancelled Accept: %v", err)
		}
		fe2.Close()
	})

	if _, err := Dial(filepath.Join(dir, "nobody.sock"), Options{}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Dial to a missing socket: %v", err)
	}
}
