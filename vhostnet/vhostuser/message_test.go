package vhostuser

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type sample struct {
	name string
	m    Message
	dir  Direction
	nfds int
}

var testRegion = MemoryRegion{GuestPhysAddr: 0x100000, Size: 0x200000, UserAddr: 0x7f0000000000, MmapOffset: 0x1000}

// validSamples is one valid message per request type and direction this
// package implements; it seeds FuzzDecode too.
func validSamples() []sample {
	v1 := Version1
	req := func(r Request, p Payload, nfds int) sample {
		return sample{name: r.String(), m: Message{Request: r, Flags: v1, Payload: p}, dir: ToBackend, nfds: nfds}
	}
	rep := func(r Request, p Payload) sample {
		return sample{name: r.String() + "/reply", m: Message{Request: r, Flags: v1 | FlagReply, Payload: p}, dir: ToFrontend}
	}
	twoRegions := MemoryTable{Regions: []MemoryRegion{testRegion, {GuestPhysAddr: 0x1000_0000, Size: 0x1000, UserAddr: 0x1000, MmapOffset: 0}}}
	s := []sample{
		req(ReqGetFeatures, nil, 0),
		req(ReqSetFeatures, U64(1<<32|1<<30), 0),
		req(ReqSetOwner, nil, 0),
		req(ReqResetOwner, nil, 0),
		req(ReqSetMemTable, twoRegions, 2),
		req(ReqSetMemTable, MemoryTable{Regions: []MemoryRegion{}}, 0),
		req(ReqSetVringNum, VringState{Index: 1, Num: 256}, 0),
		req(ReqSetVringAddr, VringAddr{Index: 1, Flags: VringFlagLog, Desc: 0x1000, Used: 0x3000, Avail: 0x2000, Log: 0x9000}, 0),
		req(ReqSetVringBase, VringState{Index: 1, Num: 7}, 0),
		req(ReqGetVringBase, VringState{Index: 1}, 0),
		req(ReqSetVringKick, VringFile{Index: 3}, 1),
		req(ReqSetVringCall, VringFile{Index: 255}, 1),
		req(ReqSetVringErr, VringFile{Index: 0, NoFD: true}, 0),
		req(ReqGetProtocolFeatures, nil, 0),
		req(ReqSetProtocolFeatures, U64(ProtocolMQ|ProtocolReplyAck), 0),
		req(ReqGetQueueNum, nil, 0),
		req(ReqSetVringEnable, VringState{Index: 2, Num: 1}, 0),
		req(ReqSendRARP, U64(0x0000_5544_3322_1100), 0),
		req(ReqNetSetMTU, U64(1500), 0),
		req(ReqGetConfig, ConfigSpace{Offset: 4, Data: make([]byte, 6)}, 0),
		req(ReqSetConfig, ConfigSpace{Offset: 0, Flags: ConfigMigration, Data: []byte{1, 2, 3}}, 0),
		req(ReqGetMaxMemSlots, nil, 0),
		req(ReqAddMemReg, SingleMemoryRegion{Region: testRegion}, 1),
		req(ReqRemMemReg, SingleMemoryRegion{Region: testRegion}, 0),
		req(ReqSetStatus, U64(0xf), 0),
		req(ReqGetStatus, nil, 0),
		req(ReqResetDevice, nil, 0),
		req(ReqSetLogBase, Raw(make([]byte, 16)), 0),
		req(Request(999), Raw([]byte{1, 2, 3}), 0),
		rep(ReqGetFeatures, U64(1<<30)),
		rep(ReqGetProtocolFeatures, U64(ProtocolMQ)),
		rep(ReqGetQueueNum, U64(2)),
		rep(ReqGetVringBase, VringState{Index: 1, Num: 9}),
		rep(ReqGetConfig, ConfigSpace{Offset: 4, Data: []byte{1, 2}}),
		rep(ReqGetConfig, nil),
		rep(ReqGetMaxMemSlots, U64(32)),
		rep(ReqGetStatus, U64(0xf)),
		rep(ReqSetVringNum, U64(0)),
		rep(ReqSetMemTable, U64(1)),
		rep(ReqSetLogBase, U64(1)),
	}
	s[0].m.Flags |= FlagNeedReply // need-reply is legal on any request
	return s
}

// memfds returns n fresh descriptors; the code under test owns them.
func memfds(t *testing.T, n int) []*os.File {
	t.Helper()
	files := make([]*os.File, n)
	for i := range files {
		fd, err := unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatalf("memfd_create: %v", err)
		}
		files[i] = os.NewFile(uintptr(fd), "memfd")
	}
	return files
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	checkFDLeaks(t)
	for _, tc := range validSamples() {
		t.Run(tc.name, func(t *testing.T) {
			buf, err := tc.m.encode(tc.dir, tc.nfds)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			files := memfds(t, tc.nfds)
			got, err := DecodeMessage(buf, files, tc.dir)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			defer got.Close()
			if got.Request != tc.m.Request || got.Flags != tc.m.Flags {
				t.Errorf("header = %v/%#x, want %v/%#x", got.Request, got.Flags, tc.m.Request, tc.m.Flags)
			}
			if !reflect.DeepEqual(got.Payload, tc.m.Payload) {
				t.Errorf("payload = %#v, want %#v", got.Payload, tc.m.Payload)
			}
			wantFiles := tc.nfds
			if specFor(tc.m.Request).fds == fdAnyClosed || specFor(tc.m.Request).fds == fdDiscard {
				wantFiles = 0
			}
			if len(got.Files) != wantFiles {
				t.Errorf("kept %d files, want %d", len(got.Files), wantFiles)
			}
			for i, f := range got.Files {
				if f != files[i] {
					t.Errorf("file %d reordered", i)
				}
			}
		})
	}
}

func TestWireLayout(t *testing.T) {
	// Offsets fixed by the protocol, checked byte by byte.
	m := Message{Request: ReqSetVringAddr, Flags: Version1, Payload: VringAddr{Index: 1, Flags: 2, Desc: 3, Used: 4, Avail: 5, Log: 6}}
	buf, err := m.encode(ToBackend, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(buf) != HeaderSize+40 {
		t.Fatalf("SET_VRING_ADDR is %d bytes, want %d", len(buf), HeaderSize+40)
	}
	for i, want := range map[int]uint64{12: 1, 16: 2, 20: 3, 28: 4, 36: 5, 44: 6} {
		var got uint64
		if i < 20 {
			got = uint64(ne.Uint32(buf[i:]))
		} else {
			got = ne.Uint64(buf[i:])
		}
		if got != want {
			t.Errorf("offset %d = %d, want %d", i, got, want)
		}
	}
	kick := Message{Request: ReqSetVringKick, Flags: Version1, Payload: VringFile{Index: 5, NoFD: true}}
	buf, _ = kick.encode(ToBackend, 0)
	if got := ne.Uint64(buf[HeaderSize:]); got != 0x105 {
		t.Errorf("kick word = %#x, want 0x105", got)
	}
	mt := Message{Request: ReqSetMemTable, Flags: Version1, Payload: MemoryTable{Regions: []MemoryRegion{testRegion}}}
	buf, _ = mt.encode(ToBackend, 1)
	if n, sz := ne.Uint32(buf[12:]), ne.Uint32(buf[8:]); n != 1 || sz != 8+32 {
		t.Errorf("memory table nregions=%d size=%d, want 1 and 40", n, sz)
	}
	if got := ne.Uint64(buf[12+8+24:]); got != testRegion.MmapOffset {
		t.Errorf("mmap_offset = %#x, want %#x", got, testRegion.MmapOffset)
	}
}

func TestDecodeRejects(t *testing.T) {
	checkFDLeaks(t)
	v1 := Version1
	region := func(r MemoryRegion) []byte {
		b := make([]byte, 32)
		r.put(b)
		return b
	}
	memTable := func(n uint32, regions ...MemoryRegion) []byte {
		b := make([]byte, 8)
		ne.PutUint32(b, n)
		for _, r := range regions {
			b = append(b, region(r)...)
		}
		return b
	}
	config := func(off, size, flags uint32, data int) []byte {
		b := make([]byte, 12+data)
		ne.PutUint32(b[0:], off)
		ne.PutUint32(b[4:], size)
		ne.PutUint32(b[8:], flags)
		return b
	}
	tests := []struct {
		name   string
		buf    []byte
		nfds   int
		dir    Direction
		reason string
	}{
		{"empty", nil, 0, ToBackend, "shorter than"},
		{"short header", []byte{1, 0, 0, 0, 1, 0}, 1, ToBackend, "shorter than"},
		{"version 0", rawMessage(ReqGetFeatures, 0, nil), 0, ToBackend, "version"},
		{"version 2", rawMessage(ReqGetFeatures, 2, nil), 0, ToBackend, "version"},
		{"undefined flag", rawMessage(ReqGetFeatures, v1|0x10, nil), 0, ToBackend, "undefined flag"},
		{"request with reply flag", rawMessage(ReqGetFeatures, v1|FlagReply, nil), 0, ToBackend, "reply flag"},
		{"reply without reply flag", rawMessage(ReqGetFeatures, v1, u64Bytes(1)), 0, ToFrontend, "lacks the reply flag"},
		{"reply with need-reply", rawMessage(ReqGetFeatures, v1|FlagReply|FlagNeedReply, u64Bytes(1)), 0, ToFrontend, "need-reply"},
		{"reply with fd", rawMessage(ReqGetFeatures, v1|FlagReply, u64Bytes(1)), 1, ToFrontend, "descriptors"},
		{"reply to unsupported not a status", rawMessage(ReqSetLogBase, v1|FlagReply, make([]byte, 16)), 0, ToFrontend, "expected 8"},
		{"size mismatch", append(rawMessage(ReqSetFeatures, v1, u64Bytes(1)), 0), 0, ToBackend, "announces"},
		{"truncated payload", rawMessage(ReqSetFeatures, v1, u64Bytes(1))[:15], 0, ToBackend, "announces"},
		{"oversize", func() []byte { b := rawMessage(Request(999), v1, make([]byte, 4097)); return b }(), 0, ToBackend, "exceeds"},
		{"GET_FEATURES with payload", rawMessage(ReqGetFeatures, v1, u64Bytes(0)), 0, ToBackend, "expected 0"},
		{"SET_FEATURES short", rawMessage(ReqSetFeatures, v1, []byte{1, 2, 3, 4}), 0, ToBackend, "expected 8"},
		{"GET_FEATURES reply short", rawMessage(ReqGetFeatures, v1|FlagReply, []byte{1}), 0, ToFrontend, "expected 8"},
		{"ack reply wrong size", rawMessage(ReqSetVringNum, v1|FlagReply, make([]byte, 4)), 0, ToFrontend, "expected 8"},
		{"GET_VRING_BASE reply wrong size", rawMessage(ReqGetVringBase, v1|FlagReply, make([]byte, 16)), 0, ToFrontend, "expected 8"},
		{"SET_VRING_ADDR short", rawMessage(ReqSetVringAddr, v1, make([]byte, 32)), 0, ToBackend, "expected 40"},
		{"mem table 9 regions", memTable9(), 0, ToBackend, "at most 8"},
		{"mem table huge count", rawMessage(ReqSetMemTable, v1, memTable(0xffffffff)), 0, ToBackend, "at most 8"},
		{"mem table count/size mismatch", rawMessage(ReqSetMemTable, v1, memTable(2, testRegion)), 1, ToBackend, "expected 72"},
		{"mem table header short", rawMessage(ReqSetMemTable, v1, []byte{1, 0, 0}), 0, ToBackend, "shorter"},
		{"mem table fd missing", rawMessage(ReqSetMemTable, v1, memTable(1, testRegion)), 0, ToBackend, "expected 1"},
		{"mem table fd surplus", rawMessage(ReqSetMemTable, v1, memTable(1, testRegion)), 2, ToBackend, "expected 1"},
		{"region size 0", rawMessage(ReqSetMemTable, v1, memTable(1, MemoryRegion{GuestPhysAddr: 0x1000})), 1, ToBackend, "size 0"},
		{"region guest overflow", rawMessage(ReqSetMemTable, v1, memTable(1, MemoryRegion{GuestPhysAddr: ^uint64(0), Size: 2})), 1, ToBackend, "overflows"},
		{"region user overflow", rawMessage(ReqAddMemReg, v1, append(make([]byte, 8), region(MemoryRegion{UserAddr: ^uint64(0) - 1, Size: 4})...)), 1, ToBackend, "overflows"},
		{"region mmap overflow", rawMessage(ReqAddMemReg, v1, append(make([]byte, 8), region(MemoryRegion{MmapOffset: ^uint64(0), Size: 4})...)), 1, ToBackend, "overflows"},
		{"ADD_MEM_REG without fd", rawMessage(ReqAddMemReg, v1, append(make([]byte, 8), region(testRegion)...)), 0, ToBackend, "expected 1"},
		{"REM_MEM_REG two fds", rawMessage(ReqRemMemReg, v1, append(make([]byte, 8), region(testRegion)...)), 2, ToBackend, "at most 1"},
		{"kick without fd", rawMessage(ReqSetVringKick, v1, u64Bytes(1)), 0, ToBackend, "expected 1"},
		{"kick NOFD with fd", rawMessage(ReqSetVringKick, v1, u64Bytes(0x101)), 1, ToBackend, "expected 0"},
		{"kick reserved bits", rawMessage(ReqSetVringCall, v1, u64Bytes(1<<9)), 1, ToBackend, "reserved"},
		{"SET_OWNER with fd", rawMessage(ReqSetOwner, v1, nil), 1, ToBackend, "expected 0"},
		{"too many fds", rawMessage(ReqSetOwner, v1, nil), 9, ToBackend, "at most 8"},
		{"config short", rawMessage(ReqSetConfig, v1, make([]byte, 8)), 0, ToBackend, "shorter"},
		{"config size mismatch", rawMessage(ReqSetConfig, v1, config(0, 4, 0, 3)), 0, ToBackend, "expected 16"},
		{"config window too big", rawMessage(ReqSetConfig, v1, config(4090, 8, 0, 8)), 0, ToBackend, "exceeds"},
		{"config offset overflow", rawMessage(ReqSetConfig, v1, config(0xffffffff, 2, 0, 2)), 0, ToBackend, "exceeds"},
		{"config flags", rawMessage(ReqSetConfig, v1, config(0, 1, 2, 1)), 0, ToBackend, "flags"},
		{"GET_CONFIG request empty", rawMessage(ReqGetConfig, v1, nil), 0, ToBackend, "shorter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := memfds(t, tc.nfds)
			m, err := DecodeMessage(tc.buf, files, tc.dir)
			if err == nil {
				m.Close()
				t.Fatalf("decoded %+v, want error containing %q", m, tc.reason)
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ProtocolError", err, err)
			}
			if !strings.Contains(pe.Reason, tc.reason) {
				t.Errorf("reason %q does not mention %q", pe.Reason, tc.reason)
			}
			for i, f := range files {
				if !isClosed(f) {
					t.Errorf("file %d left open on error", i)
				}
			}
		})
	}
}

func memTable9() []byte {
	b := make([]byte, 8+9*32)
	ne.PutUint32(b, 9)
	for i := 0; i < 9; i++ {
		r := testRegion
		r.GuestPhysAddr += uint64(i) << 32
		r.put(b[8+32*i:])
	}
	return rawMessage(ReqSetMemTable, Version1, b)
}

func TestDecodeClosesUnusedFiles(t *testing.T) {
	checkFDLeaks(t)
	region := make([]byte, 40)
	testRegion.put(region[8:])
	tests := []struct {
		name string
		buf  []byte
		nfds int
	}{
		{"REM_MEM_REG tolerated fd", rawMessage(ReqRemMemReg, Version1, region), 1},
		{"unimplemented request", rawMessage(ReqSetLogFD, Version1, nil), 1},
		{"unknown request", rawMessage(Request(77), Version1|FlagNeedReply, []byte{1, 2}), 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := memfds(t, tc.nfds)
			m, err := DecodeMessage(tc.buf, files, ToBackend)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(m.Files) != 0 {
				t.Errorf("message kept %d files", len(m.Files))
			}
			for i, f := range files {
				if !isClosed(f) {
					t.Errorf("file %d not closed", i)
				}
			}
		})
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	tests := []struct {
		name string
		m    Message
		dir  Direction
		nfds int
	}{
		{"wrong payload type", Message{Request: ReqSetVringNum, Flags: Version1, Payload: U64(1)}, ToBackend, 0},
		{"missing fd", Message{Request: ReqSetVringKick, Flags: Version1, Payload: VringFile{Index: 1}}, ToBackend, 0},
		{"too many regions", Message{Request: ReqSetMemTable, Flags: Version1, Payload: MemoryTable{Regions: make([]MemoryRegion, 9)}}, ToBackend, 9},
		{"oversize raw", Message{Request: 999, Flags: Version1, Payload: Raw(make([]byte, 5000))}, ToBackend, 0},
		{"reply flag on request", Message{Request: ReqSetOwner, Flags: Version1 | FlagReply}, ToBackend, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.m.encode(tc.dir, tc.nfds); err == nil {
				t.Fatal("encode accepted an invalid message")
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{ReqSetVringKick.String(), "SET_VRING_KICK"},
		{ReqGetStatus.String(), "GET_STATUS"},
		{Request(0).String(), "REQUEST(0)"},
		{Request(41).String(), "REQUEST(41)"},
		{(ProtocolMQ | ProtocolReplyAck | 1<<40).String(), "MQ|REPLY_ACK|BIT40"},
		{ProtocolFeatures(0).String(), "0"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
