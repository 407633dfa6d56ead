package vhostuser

import (
	"errors"
	"fmt"
	"os"
)

// Direction says which way a message travels, which decides how it is
// validated: requests go to the back-end, replies to the front-end.
type Direction uint8

const (
	// ToBackend: a request. FlagReply must be clear.
	ToBackend Direction = iota
	// ToFrontend: a reply. FlagReply must be set and FlagNeedReply clear.
	ToFrontend
)

func (d Direction) String() string {
	if d == ToFrontend {
		return "reply"
	}
	return "request"
}

// Message is one decoded vhost-user message.
//
// A Message from [ReadMessage] or [DecodeMessage] has passed every check
// this package knows: the payload type matches the request and direction,
// sizes are exact, and Files has exactly the count the request calls for.
// Payload is nil for requests without a body and for the empty GET_CONFIG
// reply that signals a back-end error.
type Message struct {
	Request Request
	Flags   Flags
	Payload Payload
	// Files are the descriptors received with the message (SCM_RIGHTS), in
	// order. The Message owns them until a caller takes them; Close releases
	// whatever is left.
	Files []*os.File
}

// IsReply reports whether FlagReply is set.
func (m *Message) IsReply() bool { return m.Flags&FlagReply != 0 }

// NeedReply reports whether FlagNeedReply is set.
func (m *Message) NeedReply() bool { return m.Flags&FlagNeedReply != 0 }

// Close closes every file still in m.Files and clears the slice. It is safe
// to call more than once.
func (m *Message) Close() error {
	err := closeFiles(m.Files)
	m.Files = nil
	return err
}

func closeFiles(files []*os.File) error {
	var errs []error
	for _, f := range files {
		if f == nil {
			continue
		}
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ProtocolError reports a message that breaks the protocol: malformed,
// out of place, or not what the receiver asked for. The connection it came
// from should be dropped.
type ProtocolError struct {
	// Request is the request type of the offending message, or 0 when the
	// header could not be read.
	Request Request
	// Reason says what was wrong.
	Reason string
}

func (e *ProtocolError) Error() string {
	if e.Request == 0 {
		return "vhost-user protocol error: " + e.Reason
	}
	return fmt.Sprintf("vhost-user protocol error: %v: %s", e.Request, e.Reason)
}

func protoErr(r Request, format string, args ...any) *ProtocolError {
	return &ProtocolError{Request: r, Reason: fmt.Sprintf(format, args...)}
}

type payloadKind uint8

const (
	kindNone payloadKind = iota
	kindU64
	kindState
	kindAddr
	kindMemTable
	kindSingleRegion
	kindConfig
	kindVringFile
	kindRaw
)

type fdRule uint8

const (
	fdNone      fdRule = iota // no descriptors
	fdPerRegion               // one per memory-table region
	fdOne                     // exactly one
	fdVring                   // one, or none when VringFile.NoFD is set
	fdDiscard                 // zero or one, closed unused (REM_MEM_REG)
	fdAnyClosed               // unimplemented request: any count, all closed
)

// requestSpec is the wire contract of one request type.
type requestSpec struct {
	supported bool
	body      payloadKind // request payload
	reply     payloadKind // mandatory reply payload; kindNone = none
	fds       fdRule
}

// specFor returns the contract of r. Unknown and unimplemented requests get
// a permissive spec (raw payload, descriptors closed) so a back-end can
// refuse them without losing its place in the stream; the only reply this
// package sends or accepts for them is a REPLY_ACK status.
func specFor(r Request) requestSpec {
	switch r {
	case ReqGetFeatures, ReqGetProtocolFeatures, ReqGetQueueNum,
		ReqGetMaxMemSlots, ReqGetStatus:
		return requestSpec{supported: true, body: kindNone, reply: kindU64}
	case ReqSetFeatures, ReqSetProtocolFeatures, ReqSendRARP, ReqNetSetMTU,
		ReqSetStatus:
		return requestSpec{supported: true, body: kindU64}
	case ReqSetOwner, ReqResetOwner, ReqResetDevice:
		return requestSpec{supported: true, body: kindNone}
	case ReqSetMemTable:
		return requestSpec{supported: true, body: kindMemTable, fds: fdPerRegion}
	case ReqSetVringNum, ReqSetVringBase, ReqSetVringEnable:
		return requestSpec{supported: true, body: kindState}
	case ReqGetVringBase:
		return requestSpec{supported: true, body: kindState, reply: kindState}
	case ReqSetVringAddr:
		return requestSpec{supported: true, body: kindAddr}
	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		return requestSpec{supported: true, body: kindVringFile, fds: fdVring}
	case ReqGetConfig:
		return requestSpec{supported: true, body: kindConfig, reply: kindConfig}
	case ReqSetConfig:
		return requestSpec{supported: true, body: kindConfig}
	case ReqAddMemReg:
		return requestSpec{supported: true, body: kindSingleRegion, fds: fdOne}
	case ReqRemMemReg:
		return requestSpec{supported: true, body: kindSingleRegion, fds: fdDiscard}
	default:
		return requestSpec{body: kindRaw, fds: fdAnyClosed}
	}
}

// hasMandatoryReply reports whether r is always answered, REPLY_ACK or not.
func hasMandatoryReply(r Request) bool {
	s := specFor(r)
	return s.supported && s.reply != kindNone
}

// DecodeMessage validates and decodes one complete message: the 12-byte
// header followed by exactly the payload the header announces. files are
// the descriptors that arrived with it; DecodeMessage takes ownership of
// them. On error every file is closed; on success the files the request
// uses are in Message.Files and any others are closed.
func DecodeMessage(buf []byte, files []*os.File, dir Direction) (*Message, error) {
	m, keep, err := decode(buf, len(files), dir)
	if err != nil {
		closeFiles(files)
		return nil, err
	}
	if keep && len(files) > 0 {
		m.Files = files
	} else {
		closeFiles(files)
	}
	return m, nil
}

// decode checks buf against the protocol, given nfds attached descriptors.
// keep reports whether the descriptors belong to the decoded message.
func decode(buf []byte, nfds int, dir Direction) (m *Message, keep bool, err error) {
	if len(buf) < HeaderSize {
		return nil, false, protoErr(0, "message of %d bytes is shorter than the %d-byte header", len(buf), HeaderSize)
	}
	req := Request(ne.Uint32(buf[0:]))
	flags := Flags(ne.Uint32(buf[4:]))
	size := ne.Uint32(buf[8:])
	if size > MaxPayloadSize {
		return nil, false, protoErr(req, "payload size %d exceeds %d", size, MaxPayloadSize)
	}
	payload := buf[HeaderSize:]
	if uint64(len(payload)) != uint64(size) {
		return nil, false, protoErr(req, "header announces %d payload bytes, got %d", size, len(payload))
	}
	if err := checkFlags(req, flags, dir); err != nil {
		return nil, false, err
	}
	if nfds > MaxFDs {
		return nil, false, protoErr(req, "%d descriptors attached, at most %d allowed", nfds, MaxFDs)
	}

	spec := specFor(req)
	kind := spec.body
	if dir == ToFrontend {
		kind = spec.reply
		if kind == kindNone {
			kind = kindU64 // REPLY_ACK status
		}
		if nfds != 0 {
			return nil, false, protoErr(req, "reply carries %d descriptors, expected none", nfds)
		}
	}

	p, err := decodePayload(req, kind, dir, payload)
	if err != nil {
		return nil, false, err
	}
	m = &Message{Request: req, Flags: flags, Payload: p}
	if dir == ToFrontend {
		return m, false, nil
	}

	want := 0
	switch spec.fds {
	case fdNone:
	case fdPerRegion:
		want = len(p.(MemoryTable).Regions)
	case fdOne:
		want = 1
	case fdVring:
		if !p.(VringFile).NoFD {
			want = 1
		}
	case fdDiscard:
		if nfds > 1 {
			return nil, false, protoErr(req, "%d descriptors attached, expected at most 1", nfds)
		}
		return m, false, nil
	case fdAnyClosed:
		return m, false, nil
	}
	if nfds != want {
		return nil, false, protoErr(req, "%d descriptors attached, expected %d", nfds, want)
	}
	return m, true, nil
}

func checkFlags(req Request, flags Flags, dir Direction) error {
	if v := flags & FlagVersionMask; v != Version1 {
		return protoErr(req, "unsupported protocol version %d", v)
	}
	if extra := flags &^ knownFlags; extra != 0 {
		return protoErr(req, "undefined flag bits %#x", uint32(extra))
	}
	switch dir {
	case ToBackend:
		if flags&FlagReply != 0 {
			return protoErr(req, "request has the reply flag set")
		}
	case ToFrontend:
		if flags&FlagReply == 0 {
			return protoErr(req, "reply lacks the reply flag")
		}
		if flags&FlagNeedReply != 0 {
			return protoErr(req, "reply has the need-reply flag set")
		}
	}
	return nil
}

func decodePayload(req Request, kind payloadKind, dir Direction, b []byte) (Payload, error) {
	exact := func(n int) error {
		if len(b) != n {
			return protoErr(req, "%s payload is %d bytes, expected %d", dir, len(b), n)
		}
		return nil
	}
	switch kind {
	case kindNone:
		return nil, exact(0)
	case kindU64:
		if err := exact(8); err != nil {
			return nil, err
		}
		return decodeU64(b), nil
	case kindState:
		if err := exact(8); err != nil {
			return nil, err
		}
		return decodeVringState(b), nil
	case kindAddr:
		if err := exact(vringAddrSize); err != nil {
			return nil, err
		}
		return decodeVringAddr(b), nil
	case kindVringFile:
		if err := exact(8); err != nil {
			return nil, err
		}
		x := ne.Uint64(b)
		if x&^(vringFileIndexMask|vringFileNoFD) != 0 {
			return nil, protoErr(req, "reserved bits set in vring descriptor word %#x", x)
		}
		return VringFile{Index: uint8(x & vringFileIndexMask), NoFD: x&vringFileNoFD != 0}, nil
	case kindMemTable:
		if len(b) < memTableHeaderSize {
			return nil, protoErr(req, "memory table payload of %d bytes is shorter than its header", len(b))
		}
		n := ne.Uint32(b[0:])
		if n > MaxMemTableRegions {
			return nil, protoErr(req, "%d memory regions, at most %d allowed", n, MaxMemTableRegions)
		}
		if err := exact(memTableHeaderSize + int(n)*memoryRegionSize); err != nil {
			return nil, err
		}
		t := MemoryTable{Regions: make([]MemoryRegion, n)}
		for i := range t.Regions {
			r := decodeMemoryRegion(b[memTableHeaderSize+i*memoryRegionSize:])
			if err := r.validate(); err != nil {
				return nil, protoErr(req, "region %d: %v", i, err)
			}
			t.Regions[i] = r
		}
		return t, nil
	case kindSingleRegion:
		if err := exact(singleRegionSize); err != nil {
			return nil, err
		}
		r := decodeMemoryRegion(b[8:])
		if err := r.validate(); err != nil {
			return nil, protoErr(req, "%v", err)
		}
		return SingleMemoryRegion{Region: r}, nil
	case kindConfig:
		if dir == ToFrontend && len(b) == 0 {
			return nil, nil // the back-end's "GET_CONFIG failed" answer
		}
		if len(b) < configHeaderSize {
			return nil, protoErr(req, "config payload of %d bytes is shorter than its header", len(b))
		}
		off, size, flags := ne.Uint32(b[0:]), ne.Uint32(b[4:]), ne.Uint32(b[8:])
		if uint64(off)+uint64(size) > MaxConfigSize {
			return nil, protoErr(req, "config window %d+%d exceeds %d bytes", off, size, MaxConfigSize)
		}
		if flags > uint32(ConfigMigration) {
			return nil, protoErr(req, "undefined config flags %#x", flags)
		}
		if err := exact(configHeaderSize + int(size)); err != nil {
			return nil, err
		}
		data := make([]byte, size)
		copy(data, b[configHeaderSize:])
		return ConfigSpace{Offset: off, Flags: ConfigFlags(flags), Data: data}, nil
	case kindRaw:
		return Raw(append([]byte(nil), b...)), nil
	}
	return nil, protoErr(req, "internal: unknown payload kind %d", kind)
}

// encode lays m out on the wire and checks the result, with nfds attached
// descriptors, against the rules the receiver applies, so this package never
// sends what it would itself reject.
func (m *Message) encode(dir Direction, nfds int) ([]byte, error) {
	if got, want := kindOf(m.Payload), expectedKind(m.Request, dir); got != want &&
		!(got == kindNone && want == kindConfig && dir == ToFrontend) {
		return nil, fmt.Errorf("vhost-user: encode %v %v: payload type %T does not fit", m.Request, dir, m.Payload)
	}
	n := 0
	if m.Payload != nil {
		n = m.Payload.wireSize()
	}
	if n > MaxPayloadSize {
		return nil, fmt.Errorf("vhost-user: encode %v: payload of %d bytes exceeds %d", m.Request, n, MaxPayloadSize)
	}
	buf := make([]byte, HeaderSize+n)
	ne.PutUint32(buf[0:], uint32(m.Request))
	ne.PutUint32(buf[4:], uint32(m.Flags))
	ne.PutUint32(buf[8:], uint32(n))
	if m.Payload != nil {
		m.Payload.put(buf[HeaderSize:])
	}
	if _, _, err := decode(buf, nfds, dir); err != nil {
		return nil, fmt.Errorf("vhost-user: refusing to send invalid message: %w", err)
	}
	return buf, nil
}

// kindOf maps a payload value to its kind.
func kindOf(p Payload) payloadKind {
	switch p.(type) {
	case nil:
		return kindNone
	case U64:
		return kindU64
	case VringState:
		return kindState
	case VringAddr:
		return kindAddr
	case MemoryTable:
		return kindMemTable
	case SingleMemoryRegion:
		return kindSingleRegion
	case ConfigSpace:
		return kindConfig
	case VringFile:
		return kindVringFile
	case Raw:
		return kindRaw
	}
	return kindRaw
}

// expectedKind is the payload kind a message of request r travelling in
// direction dir carries.
func expectedKind(r Request, dir Direction) payloadKind {
	s := specFor(r)
	if dir == ToBackend {
		return s.body
	}
	if s.reply == kindNone {
		return kindU64
	}
	return s.reply
}
