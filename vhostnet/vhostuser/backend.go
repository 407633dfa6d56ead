package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/govmm/govmm/kvm"
)

// Handler is the device side of a vhost-user back-end: one method per
// request. [Serve] decodes and validates each request, enforces the
// protocol's feature gating and ordering, and calls the matching method;
// the Handler supplies device semantics only.
//
// Methods are called from the Serve goroutine, one at a time. A returned
// error is reported to the front-end when it can be (a REPLY_ACK status of
// 1, or an empty GET_CONFIG reply); when it cannot, Serve returns the error
// and drops the connection, because the front-end would otherwise believe
// the request succeeded. A handler that wants to tolerate a failure should
// return nil.
//
// Values come from the peer: handlers must bounds-check queue indexes and
// ring sizes against their own limits.
type Handler interface {
	// GetFeatures returns the virtio features offered, plus
	// FeatureProtocolFeatures to enable protocol-feature negotiation.
	GetFeatures() (uint64, error)
	// SetFeatures receives the acknowledged subset (checked by Serve).
	SetFeatures(features uint64) error
	// GetProtocolFeatures returns the protocol features the device wants
	// to offer. Serve advertises only those also in
	// SupportedProtocolFeatures whose optional interface the handler
	// implements (ConfigHandler for CONFIG, and so on).
	GetProtocolFeatures() (ProtocolFeatures, error)
	// SetProtocolFeatures receives the enabled subset (checked by Serve).
	SetProtocolFeatures(features ProtocolFeatures) error
	// GetQueueNum returns the most queues supported (asked only with MQ).
	GetQueueNum() (uint64, error)
	// SetOwner marks the start of a session (at most once per connection).
	SetOwner() error
	// SetMemTable replaces the guest memory table. files[i] backs
	// regions[i]; they are valid only during the call (Serve closes them
	// afterwards), which is enough to mmap them, e.g. with MemoryMap.
	SetMemTable(regions []MemoryRegion, files []*os.File) error
	// SetVringNum sets the size of queue index.
	SetVringNum(index, num uint32) error
	// SetVringAddr sets the ring addresses (front-end user addresses).
	SetVringAddr(addr VringAddr) error
	// SetVringBase sets the next available-ring index to read.
	SetVringBase(index, base uint32) error
	// GetVringBase stops the queue and returns its next available index.
	GetVringBase(index uint32) (uint32, error)
	// SetVringKick sets the queue's kick eventfd; nil means poll the ring.
	// The handler owns fd from here on (also when it returns an error)
	// and must close it when replaced or done.
	SetVringKick(index uint32, fd *kvm.EventFD) error
	// SetVringCall sets the eventfd to signal when buffers were used; nil
	// means none. Ownership as for SetVringKick.
	SetVringCall(index uint32, fd *kvm.EventFD) error
	// SetVringErr sets the eventfd to signal on queue errors; nil means
	// none. Ownership as for SetVringKick.
	SetVringErr(index uint32, fd *kvm.EventFD) error
	// SetVringEnable enables or disables a queue.
	SetVringEnable(index uint32, enable bool) error
}

// ConfigHandler is implemented by handlers that expose a device
// configuration space (protocol feature CONFIG).
type ConfigHandler interface {
	// GetConfig returns exactly size bytes at offset.
	GetConfig(offset, size uint32) ([]byte, error)
	// SetConfig writes data at offset. Unless flags is ConfigMigration the
	// handler must refuse writes to read-only fields.
	SetConfig(offset uint32, data []byte, flags ConfigFlags) error
}

// MemSlotsHandler is implemented by handlers that accept incremental
// memory updates (protocol feature CONFIGURE_MEM_SLOTS).
type MemSlotsHandler interface {
	// GetMaxMemSlots returns how many regions the handler accepts.
	GetMaxMemSlots() (uint64, error)
	// AddMemReg maps one more region; file is valid only during the call.
	AddMemReg(region MemoryRegion, file *os.File) error
	// RemMemReg unmaps the region with the same guest address, user
	// address and size (MmapOffset is not meaningful here).
	RemMemReg(region MemoryRegion) error
}

// StatusHandler is implemented by handlers that track the virtio device
// status byte (protocol feature STATUS).
type StatusHandler interface {
	SetStatus(status uint8) error
	GetStatus() (uint8, error)
}

// ResetDeviceHandler is implemented by handlers that can reset the device
// in place (protocol feature RESET_DEVICE).
type ResetDeviceHandler interface {
	ResetDevice() error
}

// MTUHandler is implemented by net handlers that accept the host MTU
// (protocol feature MTU). mtu is in 68..65535.
type MTUHandler interface {
	SetMTU(mtu uint16) error
}

// RARPHandler is implemented by net handlers that can announce a MAC after
// migration (protocol feature RARP).
type RARPHandler interface {
	SendRARP(mac net.HardwareAddr) error
}

// implementedProtocol returns the protocol features h can serve.
func implementedProtocol(h Handler) ProtocolFeatures {
	p := ProtocolMQ | ProtocolReplyAck
	if _, ok := h.(ConfigHandler); ok {
		p |= ProtocolConfig
	}
	if _, ok := h.(MemSlotsHandler); ok {
		p |= ProtocolConfigureMemSlots
	}
	if _, ok := h.(StatusHandler); ok {
		p |= ProtocolStatus
	}
	if _, ok := h.(ResetDeviceHandler); ok {
		p |= ProtocolResetDevice
	}
	if _, ok := h.(MTUHandler); ok {
		p |= ProtocolMTU
	}
	if _, ok := h.(RARPHandler); ok {
		p |= ProtocolRARP
	}
	return p
}

// errUnsupported refuses requests this package does not implement.
var errUnsupported = errors.New("request not implemented")

// session is the per-connection protocol state Serve keeps.
type session struct {
	conn *net.UnixConn
	h    Handler

	features     uint64
	haveFeatures bool
	offered      ProtocolFeatures
	haveOffered  bool
	acked        ProtocolFeatures
	owner        bool
}

// Serve runs the back-end side of one connection: it reads requests,
// dispatches them to h and sends the replies, until the front-end
// disconnects (nil), ctx ends (ctx.Err()), or a failure that cannot be
// reported to the front-end occurs (the error; a malformed request is a
// *ProtocolError). Serve closes conn before returning. Resources the
// handler received (eventfds, mappings) stay the handler's to release.
//
// REPLY_ACK: when negotiated and a request carries NEED_REPLY, Serve sends
// status 0 on success and 1 on failure (NEED_REPLY is ignored otherwise,
// and on requests that always have a reply). Failures include requests
// this package does not implement, requests needing a protocol feature
// that was not negotiated, feature bits that were not offered, a second
// SET_OWNER, memory or ring requests before SET_OWNER, and kick/call/err
// descriptors that are not eventfds.
func Serve(ctx context.Context, conn *net.UnixConn, h Handler) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	s := &session{conn: conn, h: h}
	for {
		m, err := ReadMessage(conn, ToBackend)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		err = s.handle(m)
		m.Close()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

func (s *session) handle(m *Message) error {
	reply, herr := s.dispatch(m)
	if herr != nil {
		herr = fmt.Errorf("vhost-user back-end %v: %w", m.Request, herr)
	}
	if hasMandatoryReply(m.Request) {
		if herr != nil {
			if m.Request == ReqGetConfig {
				return s.send(m.Request, nil) // empty reply = failure
			}
			return herr
		}
		return s.send(m.Request, reply)
	}
	// Evaluated after dispatch, so a SET_PROTOCOL_FEATURES that enables
	// REPLY_ACK is itself acknowledged.
	if m.NeedReply() && s.acked.Has(ProtocolReplyAck) {
		var status U64
		if herr != nil {
			status = 1
		}
		return s.send(m.Request, status)
	}
	return herr
}

func (s *session) send(req Request, p Payload) error {
	return writeMessage(s.conn, &Message{Request: req, Flags: Version1 | FlagReply, Payload: p}, ToFrontend, nil)
}

// backendFeatures returns (and caches) the handler's virtio features.
func (s *session) backendFeatures() (uint64, error) {
	if !s.haveFeatures {
		f, err := s.h.GetFeatures()
		if err != nil {
			return 0, err
		}
		s.features, s.haveFeatures = f, true
	}
	return s.features, nil
}

func (s *session) requireProtocolFeaturesBit() error {
	f, err := s.backendFeatures()
	if err != nil {
		return err
	}
	if f&FeatureProtocolFeatures == 0 {
		return fmt.Errorf("PROTOCOL_FEATURES (bit 30) not offered: %w", ErrNotNegotiated)
	}
	return nil
}

// offeredProtocol returns (and caches) what Serve advertises.
func (s *session) offeredProtocol() (ProtocolFeatures, error) {
	if !s.haveOffered {
		p, err := s.h.GetProtocolFeatures()
		if err != nil {
			return 0, err
		}
		s.offered = p & SupportedProtocolFeatures & implementedProtocol(s.h)
		s.haveOffered = true
	}
	return s.offered, nil
}

// errNoOwner refuses memory and ring requests before SET_OWNER.
var errNoOwner = errors.New("request before SET_OWNER")

func (s *session) require(p ProtocolFeatures) error {
	if !s.acked.Has(p) {
		return fmt.Errorf("protocol feature %v not negotiated: %w", p, ErrNotNegotiated)
	}
	return nil
}

// takeEventFD converts the message's single descriptor into an EventFD
// after checking it is one. The Message no longer owns it afterwards.
func takeEventFD(m *Message) (*kvm.EventFD, error) {
	if m.Payload.(VringFile).NoFD {
		return nil, nil
	}
	f := m.Files[0]
	m.Files[0] = nil
	if err := checkEventFD(f); err != nil {
		f.Close()
		return nil, err
	}
	return kvm.EventFDFromFile(f)
}

// dispatch performs one request. It returns the reply payload for requests
// with a mandatory reply.
func (s *session) dispatch(m *Message) (Payload, error) {
	h := s.h
	switch m.Request {
	case ReqSetMemTable, ReqAddMemReg, ReqRemMemReg, ReqSetVringNum,
		ReqSetVringAddr, ReqSetVringBase, ReqGetVringBase, ReqSetVringKick,
		ReqSetVringCall, ReqSetVringErr, ReqSetVringEnable:
		if !s.owner {
			return nil, errNoOwner
		}
	}
	switch m.Request {
	case ReqGetFeatures:
		f, err := h.GetFeatures()
		if err != nil {
			return nil, err
		}
		s.features, s.haveFeatures = f, true
		return U64(f), nil

	case ReqSetFeatures:
		v := uint64(m.Payload.(U64))
		offered, err := s.backendFeatures()
		if err != nil {
			return nil, err
		}
		if extra := v &^ offered; extra != 0 {
			return nil, fmt.Errorf("feature bits %#x were not offered", extra)
		}
		return nil, h.SetFeatures(v)

	case ReqGetProtocolFeatures:
		if err := s.requireProtocolFeaturesBit(); err != nil {
			return nil, err
		}
		p, err := s.offeredProtocol()
		return U64(p), err

	case ReqSetProtocolFeatures:
		if err := s.requireProtocolFeaturesBit(); err != nil {
			return nil, err
		}
		offered, err := s.offeredProtocol()
		if err != nil {
			return nil, err
		}
		v := ProtocolFeatures(m.Payload.(U64))
		if extra := v &^ offered; extra != 0 {
			return nil, fmt.Errorf("protocol features %v were not offered", extra)
		}
		if err := h.SetProtocolFeatures(v); err != nil {
			return nil, err
		}
		s.acked = v
		return nil, nil

	case ReqGetQueueNum:
		if err := s.require(ProtocolMQ); err != nil {
			return nil, err
		}
		n, err := h.GetQueueNum()
		return U64(n), err

	case ReqSetOwner:
		if s.owner {
			return nil, errors.New("session already has an owner")
		}
		if err := h.SetOwner(); err != nil {
			return nil, err
		}
		s.owner = true
		return nil, nil

	case ReqResetOwner:
		// Deprecated; the specification recommends ignoring it.
		return nil, nil

	case ReqSetMemTable:
		return nil, h.SetMemTable(m.Payload.(MemoryTable).Regions, m.Files)

	case ReqSetVringNum:
		st := m.Payload.(VringState)
		return nil, h.SetVringNum(st.Index, st.Num)

	case ReqSetVringBase:
		st := m.Payload.(VringState)
		return nil, h.SetVringBase(st.Index, st.Num)

	case ReqSetVringAddr:
		return nil, h.SetVringAddr(m.Payload.(VringAddr))

	case ReqGetVringBase:
		st := m.Payload.(VringState)
		base, err := h.GetVringBase(st.Index)
		return VringState{Index: st.Index, Num: base}, err

	case ReqSetVringKick, ReqSetVringCall, ReqSetVringErr:
		idx := uint32(m.Payload.(VringFile).Index)
		ev, err := takeEventFD(m)
		if err != nil {
			return nil, err
		}
		switch m.Request {
		case ReqSetVringKick:
			return nil, h.SetVringKick(idx, ev)
		case ReqSetVringCall:
			return nil, h.SetVringCall(idx, ev)
		default:
			return nil, h.SetVringErr(idx, ev)
		}

	case ReqSetVringEnable:
		if err := s.requireProtocolFeaturesBit(); err != nil {
			return nil, err
		}
		st := m.Payload.(VringState)
		if st.Num > 1 {
			return nil, fmt.Errorf("queue %d: enable value %d is not 0 or 1", st.Index, st.Num)
		}
		return nil, h.SetVringEnable(st.Index, st.Num == 1)

	case ReqSendRARP:
		if err := s.require(ProtocolRARP); err != nil {
			return nil, err
		}
		var b [8]byte
		ne.PutUint64(b[:], uint64(m.Payload.(U64)))
		return nil, h.(RARPHandler).SendRARP(net.HardwareAddr(b[:6]))

	case ReqNetSetMTU:
		if err := s.require(ProtocolMTU); err != nil {
			return nil, err
		}
		mtu := uint64(m.Payload.(U64))
		if mtu < 68 || mtu > 65535 {
			return nil, fmt.Errorf("MTU %d outside 68..65535", mtu)
		}
		return nil, h.(MTUHandler).SetMTU(uint16(mtu))

	case ReqGetConfig:
		if err := s.require(ProtocolConfig); err != nil {
			return nil, err
		}
		c := m.Payload.(ConfigSpace)
		data, err := h.(ConfigHandler).GetConfig(c.Offset, uint32(len(c.Data)))
		if err != nil {
			return nil, err
		}
		if len(data) != len(c.Data) {
			return nil, fmt.Errorf("handler returned %d config bytes, %d requested", len(data), len(c.Data))
		}
		return ConfigSpace{Offset: c.Offset, Flags: c.Flags, Data: data}, nil

	case ReqSetConfig:
		if err := s.require(ProtocolConfig); err != nil {
			return nil, err
		}
		c := m.Payload.(ConfigSpace)
		return nil, h.(ConfigHandler).SetConfig(c.Offset, c.Data, c.Flags)

	case ReqGetMaxMemSlots:
		if err := s.require(ProtocolConfigureMemSlots); err != nil {
			return nil, err
		}
		n, err := h.(MemSlotsHandler).GetMaxMemSlots()
		return U64(n), err

	case ReqAddMemReg:
		if err := s.require(ProtocolConfigureMemSlots); err != nil {
			return nil, err
		}
		return nil, h.(MemSlotsHandler).AddMemReg(m.Payload.(SingleMemoryRegion).Region, m.Files[0])

	case ReqRemMemReg:
		if err := s.require(ProtocolConfigureMemSlots); err != nil {
			return nil, err
		}
		return nil, h.(MemSlotsHandler).RemMemReg(m.Payload.(SingleMemoryRegion).Region)

	case ReqSetStatus:
		if err := s.require(ProtocolStatus); err != nil {
			return nil, err
		}
		v := uint64(m.Payload.(U64))
		if v > 0xff {
			return nil, fmt.Errorf("status %#x does not fit a byte", v)
		}
		return nil, h.(StatusHandler).SetStatus(uint8(v))

	case ReqGetStatus:
		if err := s.require(ProtocolStatus); err != nil {
			return nil, err
		}
		v, err := h.(StatusHandler).GetStatus()
		return U64(v), err

	case ReqResetDevice:
		if err := s.require(ProtocolResetDevice); err != nil {
			return nil, err
		}
		return nil, h.(ResetDeviceHandler).ResetDevice()
	}
	return nil, errUnsupported
}
