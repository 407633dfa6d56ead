package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/govmm/govmm/kvm"
)

// DefaultTimeout bounds one front-end request (send plus reply) when
// Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Options configures a [Frontend].
type Options struct {
	// Timeout bounds each request: sending it and reading its reply. A
	// back-end that does not answer in time breaks the connection. Zero
	// means DefaultTimeout.
	Timeout time.Duration
	// Logger receives one debug record per request. Nil discards.
	Logger *slog.Logger
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Errors returned by [Frontend] methods (wrapped; test with errors.Is).
var (
	// ErrClosed: the Frontend was closed.
	ErrClosed = errors.New("vhost-user: connection closed")
	// ErrBroken: an earlier request failed at the transport or protocol
	// level (timeout, malformed reply, peer gone), so the connection was
	// dropped; the original error is wrapped as well.
	ErrBroken = errors.New("vhost-user: connection broken by an earlier error")
	// ErrNotNegotiated: the request needs a feature that was not negotiated
	// (or, on the front-end, whose negotiation has not happened yet).
	ErrNotNegotiated = errors.New("vhost-user: feature not negotiated")
)

// BackendError is a back-end's refusal of a request: a non-zero REPLY_ACK
// status, or an empty GET_CONFIG reply (Status 0). The connection stays
// usable.
type BackendError struct {
	Request Request
	Status  uint64
}

func (e *BackendError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("vhost-user %v: back-end reported failure", e.Request)
	}
	return fmt.Sprintf("vhost-user %v: back-end reported failure (status %d)", e.Request, e.Status)
}

// SharedMemoryRegion is a guest memory region as the front-end shares it:
// the layout the back-end receives and the file that backs it (a memfd or
// hugetlbfs file mapped MAP_SHARED by the VMM). The Frontend never closes
// File.
type SharedMemoryRegion struct {
	MemoryRegion
	File *os.File
}

// Frontend is the VMM side of one vhost-user connection. Methods send one
// request each and wait for its reply when the protocol has one (always
// for GET_* requests; for the others only when REPLY_ACK was negotiated, in
// which case NEED_REPLY is set and the back-end's status is checked).
//
// Descriptors passed in (region files, eventfds) must stay open for the
// duration of the call; the back-end receives its own duplicates, so the
// caller keeps ownership and may close them whenever it is done.
//
// A Frontend is safe for concurrent use; requests are serialised. Any
// transport or protocol failure (including a timeout) closes the
// connection, because request and reply could no longer be paired; later
// calls return ErrBroken.
type Frontend struct {
	conn    *net.UnixConn
	timeout time.Duration
	log     *slog.Logger

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	mu              sync.Mutex // one request at a time; guards the fields below
	failed          error
	backendFeatures uint64
	haveFeatures    bool
	offeredProto    ProtocolFeatures
	haveOffered     bool
	proto           ProtocolFeatures
}

// NewFrontend wraps an established connection (for example one end of a
// socketpair). The Frontend owns conn.
func NewFrontend(conn *net.UnixConn, opts Options) *Frontend {
	return &Frontend{conn: conn, timeout: opts.timeout(), log: opts.logger()}
}

// Dial connects to a back-end listening on the Unix socket at path (the
// front-end as client). The connect itself is bounded by opts.Timeout.
func Dial(path string, opts Options) (*Frontend, error) {
	d := net.Dialer{Timeout: opts.timeout()}
	c, err := d.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("vhost-user: dial %s: %w", path, err)
	}
	return NewFrontend(c.(*net.UnixConn), opts), nil
}

// Listener accepts back-end connections when the front-end is the server.
type Listener struct {
	ln   *net.UnixListener
	opts Options
	mu   sync.Mutex // one Accept at a time
}

// Listen creates a Unix socket at path for back-ends to connect to. The
// socket file is removed on Close. An existing file at path is an error.
func Listen(path string, opts Options) (*Listener, error) {
	ln, err := ListenUnix(path)
	if err != nil {
		return nil, err
	}
	return &Listener{ln: ln, opts: opts}, nil
}

// Accept waits for one back-end to connect, or for ctx to end.
func (l *Listener) Accept(ctx context.Context) (*Frontend, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ln.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("vhost-user: accept: %w", err)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		l.ln.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	c, err := l.ln.AcceptUnix()
	if !stop() {
		<-fired
		l.ln.SetDeadline(time.Time{})
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("vhost-user: accept: %w", err)
	}
	if ctx.Err() != nil {
		c.Close()
		return nil, fmt.Errorf("vhost-user: accept: %w", ctx.Err())
	}
	return NewFrontend(c, l.opts), nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops listening and removes the socket file.
func (l *Listener) Close() error {
	if err := l.ln.Close(); err != nil {
		return fmt.Errorf("vhost-user: close listener: %w", err)
	}
	return nil
}

// Close closes the connection. It is idempotent and does not wait for a
// request in flight: that request fails with ErrClosed.
func (f *Frontend) Close() error {
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		if err := f.conn.Close(); err != nil {
			f.closeErr = fmt.Errorf("vhost-user: close: %w", err)
		}
	})
	return f.closeErr
}

// fail records a connection-level failure and drops the connection.
// Callers hold f.mu.
func (f *Frontend) fail(err error) error {
	if f.closed.Load() {
		err = fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	if f.failed == nil {
		f.failed = err
		f.conn.Close()
	}
	return err
}

// roundTrip sends one request and returns the reply, or nil when none is
// due. Callers hold f.mu. fds are raw descriptors whose owners the caller
// keeps alive across the call.
func (f *Frontend) roundTrip(req Request, p Payload, fds []int) (*Message, error) {
	if f.closed.Load() {
		return nil, fmt.Errorf("vhost-user %v: %w", req, ErrClosed)
	}
	if f.failed != nil {
		return nil, fmt.Errorf("vhost-user %v: %w: %w", req, ErrBroken, f.failed)
	}
	m := &Message{Request: req, Flags: Version1, Payload: p}
	mandatory := hasMandatoryReply(req)
	ack := !mandatory && f.proto.Has(ProtocolReplyAck)
	if ack {
		m.Flags |= FlagNeedReply
	}
	f.log.Debug("vhost-user request", "request", req, "need_reply", ack, "fds", len(fds))

	if err := f.conn.SetDeadline(time.Now().Add(f.timeout)); err != nil {
		return nil, f.fail(fmt.Errorf("vhost-user %v: set deadline: %w", req, err))
	}
	if err := writeMessage(f.conn, m, ToBackend, fds); err != nil {
		return nil, f.fail(err)
	}
	if !mandatory && !ack {
		f.conn.SetDeadline(time.Time{})
		return nil, nil
	}
	reply, err := ReadMessage(f.conn, ToFrontend)
	if err != nil {
		return nil, f.fail(fmt.Errorf("vhost-user %v: read reply: %w", req, err))
	}
	f.conn.SetDeadline(time.Time{})
	if reply.Request != req {
		return nil, f.fail(protoErr(req, "reply is for %v", reply.Request))
	}
	if ack {
		if st := reply.Payload.(U64); st != 0 {
			return nil, &BackendError{Request: req, Status: uint64(st)}
		}
		return nil, nil
	}
	return reply, nil
}

// GetFeatures returns the back-end's virtio feature bits, including
// FeatureProtocolFeatures when it speaks protocol-feature negotiation.
func (f *Frontend) GetFeatures() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.roundTrip(ReqGetFeatures, nil, nil)
	if err != nil {
		return 0, err
	}
	f.backendFeatures, f.haveFeatures = uint64(r.Payload.(U64)), true
	return f.backendFeatures, nil
}

// SetFeatures acknowledges virtio feature bits. They must be a subset of
// what GetFeatures reported (which must have been called).
func (f *Frontend) SetFeatures(features uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.haveFeatures {
		return fmt.Errorf("vhost-user %v: call GetFeatures first: %w", ReqSetFeatures, ErrNotNegotiated)
	}
	if extra := features &^ f.backendFeatures; extra != 0 {
		return fmt.Errorf("vhost-user %v: bits %#x not offered by the back-end: %w", ReqSetFeatures, extra, ErrNotNegotiated)
	}
	_, err := f.roundTrip(ReqSetFeatures, U64(features), nil)
	return err
}

// requireProtocolFeaturesBit checks the back-end offered feature bit 30.
// Callers hold f.mu.
func (f *Frontend) requireProtocolFeaturesBit(req Request) error {
	if !f.haveFeatures || f.backendFeatures&FeatureProtocolFeatures == 0 {
		return fmt.Errorf("vhost-user %v: back-end did not offer PROTOCOL_FEATURES (bit 30) in GET_FEATURES: %w", req, ErrNotNegotiated)
	}
	return nil
}

// requireProtocol checks a protocol feature was negotiated. Callers hold f.mu.
func (f *Frontend) requireProtocol(req Request, p ProtocolFeatures) error {
	if !f.proto.Has(p) {
		return fmt.Errorf("vhost-user %v: needs protocol feature %v: %w", req, p, ErrNotNegotiated)
	}
	return nil
}

// GetProtocolFeatures returns the back-end's protocol feature bits. The
// back-end must have offered FeatureProtocolFeatures in GetFeatures.
func (f *Frontend) GetProtocolFeatures() (ProtocolFeatures, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.requireProtocolFeaturesBit(ReqGetProtocolFeatures); err != nil {
		return 0, err
	}
	r, err := f.roundTrip(ReqGetProtocolFeatures, nil, nil)
	if err != nil {
		return 0, err
	}
	f.offeredProto, f.haveOffered = ProtocolFeatures(r.Payload.(U64)), true
	return f.offeredProto, nil
}

// SetProtocolFeatures enables protocol features. They must have been
// offered by GetProtocolFeatures and be implemented here
// (SupportedProtocolFeatures). Once REPLY_ACK is enabled every later
// request without a mandatory reply carries NEED_REPLY.
func (f *Frontend) SetProtocolFeatures(p ProtocolFeatures) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	req := ReqSetProtocolFeatures
	if err := f.requireProtocolFeaturesBit(req); err != nil {
		return err
	}
	if !f.haveOffered {
		return fmt.Errorf("vhost-user %v: call GetProtocolFeatures first: %w", req, ErrNotNegotiated)
	}
	if extra := p &^ f.offeredProto; extra != 0 {
		return fmt.Errorf("vhost-user %v: %v not offered by the back-end: %w", req, extra, ErrNotNegotiated)
	}
	if extra := p &^ SupportedProtocolFeatures; extra != 0 {
		return fmt.Errorf("vhost-user %v: %v not implemented by this front-end: %w", req, extra, ErrNotNegotiated)
	}
	if _, err := f.roundTrip(req, U64(p), nil); err != nil {
		return err
	}
	f.proto = p
	return nil
}

// NegotiateProtocolFeatures runs the start of QEMU's handshake: GET_FEATURES,
// and if the back-end offers bit 30, GET_PROTOCOL_FEATURES and
// SET_PROTOCOL_FEATURES with want ∩ offered ∩ SupportedProtocolFeatures. It
// returns the virtio features offered and the protocol features enabled
// (0 for a back-end without protocol features).
func (f *Frontend) NegotiateProtocolFeatures(want ProtocolFeatures) (features uint64, proto ProtocolFeatures, err error) {
	features, err = f.GetFeatures()
	if err != nil || features&FeatureProtocolFeatures == 0 {
		return features, 0, err
	}
	offered, err := f.GetProtocolFeatures()
	if err != nil {
		return features, 0, err
	}
	proto = want & offered & SupportedProtocolFeatures
	if err := f.SetProtocolFeatures(proto); err != nil {
		return features, 0, err
	}
	return features, proto, nil
}

// ProtocolFeatures returns the protocol features enabled so far.
func (f *Frontend) ProtocolFeatures() ProtocolFeatures {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.proto
}

// GetQueueNum returns the most queues the back-end supports (needs MQ).
func (f *Frontend) GetQueueNum() (uint64, error) {
	return f.getU64(ReqGetQueueNum, ProtocolMQ)
}

// GetMaxMemSlots returns how many memory regions the back-end accepts
// through AddMemReg (needs CONFIGURE_MEM_SLOTS).
func (f *Frontend) GetMaxMemSlots() (uint64, error) {
	return f.getU64(ReqGetMaxMemSlots, ProtocolConfigureMemSlots)
}

// GetStatus returns the back-end's virtio device status byte (needs STATUS).
func (f *Frontend) GetStatus() (uint8, error) {
	v, err := f.getU64(ReqGetStatus, ProtocolStatus)
	if err != nil {
		return 0, err
	}
	if v > 0xff {
		f.mu.Lock()
		defer f.mu.Unlock()
		return 0, f.fail(protoErr(ReqGetStatus, "status %#x does not fit a byte", v))
	}
	return uint8(v), nil
}

func (f *Frontend) getU64(req Request, need ProtocolFeatures) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.requireProtocol(req, need); err != nil {
		return 0, err
	}
	r, err := f.roundTrip(req, nil, nil)
	if err != nil {
		return 0, err
	}
	return uint64(r.Payload.(U64)), nil
}

// simple sends a request that has no mandatory reply, after checking the
// protocol features it needs.
func (f *Frontend) simple(req Request, need ProtocolFeatures, p Payload) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.requireProtocol(req, need); err != nil {
		return err
	}
	_, err := f.roundTrip(req, p, nil)
	return err
}

// SetOwner claims the back-end session; send it once, before ring setup.
func (f *Frontend) SetOwner() error { return f.simple(ReqSetOwner, 0, nil) }

// ResetDevice asks the back-end to return to its initial state (needs
// RESET_DEVICE).
func (f *Frontend) ResetDevice() error {
	return f.simple(ReqResetDevice, ProtocolResetDevice, nil)
}

// SetStatus sends the virtio device status byte (needs STATUS).
func (f *Frontend) SetStatus(status uint8) error {
	return f.simple(ReqSetStatus, ProtocolStatus, U64(status))
}

// SetMTU tells a net back-end the host MTU (needs MTU).
func (f *Frontend) SetMTU(mtu uint16) error {
	return f.simple(ReqNetSetMTU, ProtocolMTU, U64(mtu))
}

// SendRARP asks a net back-end to announce mac after migration (needs RARP).
func (f *Frontend) SendRARP(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("vhost-user %v: MAC %v is not 6 bytes", ReqSendRARP, mac)
	}
	var b [8]byte
	copy(b[:], mac)
	return f.simple(ReqSendRARP, ProtocolRARP, U64(ne.Uint64(b[:])))
}

// SetVringNum sets the size of queue index.
func (f *Frontend) SetVringNum(index, num uint32) error {
	return f.simple(ReqSetVringNum, 0, VringState{Index: index, Num: num})
}

// SetVringBase sets the next available-ring index the back-end will read.
func (f *Frontend) SetVringBase(index, base uint32) error {
	return f.simple(ReqSetVringBase, 0, VringState{Index: index, Num: base})
}

// SetVringAddr sets a queue's ring addresses (front-end user addresses).
func (f *Frontend) SetVringAddr(addr VringAddr) error {
	return f.simple(ReqSetVringAddr, 0, addr)
}

// SetVringEnable enables or disables a queue. The back-end must have
// offered FeatureProtocolFeatures.
func (f *Frontend) SetVringEnable(index uint32, enable bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.requireProtocolFeaturesBit(ReqSetVringEnable); err != nil {
		return err
	}
	var n uint32
	if enable {
		n = 1
	}
	_, err := f.roundTrip(ReqSetVringEnable, VringState{Index: index, Num: n}, nil)
	return err
}

// GetVringBase stops queue index and returns the next available-ring index
// the back-end would have read.
func (f *Frontend) GetVringBase(index uint32) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.roundTrip(ReqGetVringBase, VringState{Index: index}, nil)
	if err != nil {
		return 0, err
	}
	st := r.Payload.(VringState)
	if st.Index != index {
		return 0, f.fail(protoErr(ReqGetVringBase, "reply is for queue %d, asked for %d", st.Index, index))
	}
	return st.Num, nil
}

// SetVringKick hands the back-end the eventfd the guest's queue
// notifications arrive on (the ioeventfd). A nil fd tells it to poll.
func (f *Frontend) SetVringKick(index uint32, fd *kvm.EventFD) error {
	return f.setVringFD(ReqSetVringKick, index, fd)
}

// SetVringCall hands the back-end the eventfd it signals when it has used
// buffers (typically a KVM irqfd). A nil fd means none.
func (f *Frontend) SetVringCall(index uint32, fd *kvm.EventFD) error {
	return f.setVringFD(ReqSetVringCall, index, fd)
}

// SetVringErr hands the back-end the eventfd it signals on a queue error.
// A nil fd means none.
func (f *Frontend) SetVringErr(index uint32, fd *kvm.EventFD) error {
	return f.setVringFD(ReqSetVringErr, index, fd)
}

func (f *Frontend) setVringFD(req Request, index uint32, ev *kvm.EventFD) error {
	if index > MaxVringIndex {
		return fmt.Errorf("vhost-user %v: queue index %d exceeds %d", req, index, MaxVringIndex)
	}
	p := VringFile{Index: uint8(index), NoFD: ev == nil}
	var fds []int
	if ev != nil {
		fd := ev.Fd()
		if fd < 0 {
			return fmt.Errorf("vhost-user %v: queue %d: %w", req, index, kvm.ErrClosed)
		}
		fds = []int{fd}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.roundTrip(req, p, fds)
	runtime.KeepAlive(ev)
	return err
}

// SetMemTable replaces the back-end's view of guest memory: up to
// MaxMemTableRegions regions, each sent with its file descriptor.
func (f *Frontend) SetMemTable(regions []SharedMemoryRegion) error {
	req := ReqSetMemTable
	if len(regions) > MaxMemTableRegions {
		return fmt.Errorf("vhost-user %v: %d regions, at most %d", req, len(regions), MaxMemTableRegions)
	}
	t := MemoryTable{Regions: make([]MemoryRegion, len(regions))}
	fds := make([]int, len(regions))
	for i, r := range regions {
		fd, err := fileFD(r.File)
		if err != nil {
			return fmt.Errorf("vhost-user %v: region %d: %w", req, i, err)
		}
		t.Regions[i], fds[i] = r.MemoryRegion, fd
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.roundTrip(req, t, fds)
	runtime.KeepAlive(regions)
	return err
}

// AddMemReg adds one region (needs CONFIGURE_MEM_SLOTS).
func (f *Frontend) AddMemReg(r SharedMemoryRegion) error {
	req := ReqAddMemReg
	fd, err := fileFD(r.File)
	if err != nil {
		return fmt.Errorf("vhost-user %v: %w", req, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.requireProtocol(req, ProtocolConfigureMemSlots); err != nil {
		return err
	}
	_, err = f.roundTrip(req, SingleMemoryRegion{Region: r.MemoryRegion}, []int{fd})
	runtime.KeepAlive(r.File)
	return err
}

// RemMemReg removes the region with r's guest address, user address and
// size (needs CONFIGURE_MEM_SLOTS).
func (f *Frontend) RemMemReg(r MemoryRegion) error {
	return f.simple(ReqRemMemReg, ProtocolConfigureMemSlots, SingleMemoryRegion{Region: r})
}

// GetConfig reads size bytes of the device configuration space at offset
// (needs CONFIG). An empty reply, the back-end's way of refusing, returns
// a *BackendError.
func (f *Frontend) GetConfig(offset, size uint32) ([]byte, error) {
	req := ReqGetConfig
	if uint64(offset)+uint64(size) > MaxConfigSize {
		return nil, fmt.Errorf("vhost-user %v: window %d+%d exceeds %d bytes", req, offset, size, MaxConfigSize)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.requireProtocol(req, ProtocolConfig); err != nil {
		return nil, err
	}
	r, err := f.roundTrip(req, ConfigSpace{Offset: offset, Data: make([]byte, size)}, nil)
	if err != nil {
		return nil, err
	}
	if r.Payload == nil {
		return nil, &BackendError{Request: req}
	}
	c := r.Payload.(ConfigSpace)
	if c.Offset != offset || len(c.Data) != int(size) {
		return nil, f.fail(protoErr(req, "reply window %d+%d, asked for %d+%d", c.Offset, len(c.Data), offset, size))
	}
	return c.Data, nil
}

// SetConfig writes data into the device configuration space at offset
// (needs CONFIG).
func (f *Frontend) SetConfig(offset uint32, data []byte, flags ConfigFlags) error {
	req := ReqSetConfig
	if uint64(offset)+uint64(len(data)) > MaxConfigSize {
		return fmt.Errorf("vhost-user %v: window %d+%d exceeds %d bytes", req, offset, len(data), MaxConfigSize)
	}
	return f.simple(req, ProtocolConfig, ConfigSpace{Offset: offset, Flags: flags, Data: data})
}
