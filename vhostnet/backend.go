package vhostnet

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet/vhostuser"
)

// Errors of the vhost backends. Test them with errors.Is.
var (
	// ErrDisconnected: the backend's connection is gone (the peer closed
	// it, or a transport or protocol failure dropped it). The device
	// waits for the backend to come back instead of failing.
	ErrDisconnected = errors.New("vhost backend disconnected")
	// ErrUnsupported: the backend cannot perform the request (a protocol
	// feature of vhost-user asked of kernel vhost-net, a queue index the
	// backend does not have).
	ErrUnsupported = errors.New("not supported by this vhost backend")
	// ErrNoVhostNet: /dev/vhost-net is missing or cannot be opened.
	ErrNoVhostNet = errors.New("kernel vhost-net is not available on this host (no usable /dev/vhost-net: the kernel needs CONFIG_VHOST_NET, or the vhost_net module loaded)")
)

// VhostFProtocolFeatures is virtio feature bit 30, which a vhost-user
// backend sets in GET_FEATURES when it speaks GET/SET_PROTOCOL_FEATURES
// (and then starts its rings disabled).
const VhostFProtocolFeatures = vhostuser.FeatureProtocolFeatures

// MemoryRegion is one guest RAM region shared with a backend: Size bytes
// at guest-physical GPA, mapped in this process at UserAddr, and found at
// FileOffset in File (the memfd backing guest RAM; vhost-user sends it to
// the backend, kernel vhost-net only needs UserAddr).
type MemoryRegion struct {
	GPA        uint64
	Size       uint64
	UserAddr   uint64
	File       *os.File
	FileOffset uint64
}

// VringAddr are a queue's ring addresses in this process's address space
// (vhost's "user addresses"; see Translator).
type VringAddr struct {
	Desc, Avail, Used uint64
}

// Backend is the vhost message set a device's data-path backend
// understands, over whatever carries it (a vhost-user socket, kernel
// vhost-net fds). Queue indexes are global to the device: RX of pair p is
// 2p, TX is 2p+1 (vhost-user's numbering; the kernel backend maps them to
// its per-pair fds).
//
// Calls must be serialised by the caller (the device does). A Backend is
// started with SetOwner, feature negotiation and SetMemTable; a queue runs
// once its size, base, addresses, kick and call are set (and, with
// protocol features, it is enabled); GetVringBase stops it and returns
// the next available index it would have read.
type Backend interface {
	// SetOwner claims the backend; it comes first, once per connection.
	SetOwner() error
	// GetFeatures returns the virtio (and vhost) feature bits offered.
	GetFeatures() (uint64, error)
	// SetFeatures acknowledges a subset of GetFeatures.
	SetFeatures(features uint64) error
	// GetProtocolFeatures returns the vhost-user protocol features offered
	// (0 for kernel vhost-net). Only meaningful when GetFeatures has
	// VhostFProtocolFeatures.
	GetProtocolFeatures() (vhostuser.ProtocolFeatures, error)
	// SetProtocolFeatures enables a subset of GetProtocolFeatures.
	SetProtocolFeatures(p vhostuser.ProtocolFeatures) error
	// QueuePairs returns the most queue pairs the backend serves.
	QueuePairs() (int, error)
	// SetMemTable describes guest memory.
	SetMemTable(regions []MemoryRegion) error
	// SetVringNum sets the size of a queue.
	SetVringNum(index, num uint32) error
	// SetVringAddr sets a queue's ring addresses (user addresses).
	SetVringAddr(index uint32, addr VringAddr) error
	// SetVringBase sets the next available index the backend reads.
	SetVringBase(index, base uint32) error
	// GetVringBase stops the queue and returns its next available index.
	GetVringBase(index uint32) (uint32, error)
	// SetVringKick hands over the eventfd guest notifications arrive on
	// (the KVM ioeventfd). The caller keeps ownership.
	SetVringKick(index uint32, ev *kvm.EventFD) error
	// SetVringCall hands over the eventfd the backend signals when it used
	// buffers (a KVM irqfd). The caller keeps ownership.
	SetVringCall(index uint32, ev *kvm.EventFD) error
	// SetVringEnable enables or disables a queue (kernel vhost-net: binds
	// or unbinds the queue pair's TAP queue).
	SetVringEnable(index uint32, enable bool) error
	// Close releases the backend (connection, fds). Idempotent.
	Close() error
}

// Watcher is implemented by backends whose peer can go away (vhost-user):
// the channel is closed when the connection hangs up.
type Watcher interface {
	Disconnected() <-chan struct{}
}

// Connector produces a connected Backend, again after a disconnect: a
// vhost-user client dials its socket, a server accepts the next peer.
type Connector interface {
	// Connect returns a new Backend, or an error once ctx ends. A
	// Connector that cannot reconnect (kernel vhost-net) returns
	// ErrUnsupported after the first Backend.
	Connect(ctx context.Context) (Backend, error)
	// Reconnects reports whether Connect may be called again after the
	// backend went away.
	Reconnects() bool
	// String names the backend for messages ("vhost-user /run/vu.sock").
	String() string
	// Close releases the connector (a listening socket). Idempotent.
	Close() error
}

// Translator maps guest-physical addresses to the user addresses vhost
// backends expect in SET_VRING_ADDR.
type Translator []MemoryRegion

// UserAddr translates the n bytes at gpa, which must lie in one region.
func (t Translator) UserAddr(gpa, n uint64) (uint64, error) {
	for _, r := range t {
		if gpa >= r.GPA && gpa-r.GPA < r.Size && n <= r.Size-(gpa-r.GPA) {
			return r.UserAddr + (gpa - r.GPA), nil
		}
	}
	return 0, fmt.Errorf("guest range %#x+%#x is not inside one shared memory region", gpa, n)
}
