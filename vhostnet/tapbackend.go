package vhostnet

import (
	"github.com/govmm/govmm/tap"
	"github.com/govmm/govmm/virtio"
)

// TAPBackend adapts a TAP to virtio.NetBackend, for a virtio-net data
// path that runs in user space: the VMM's own device (virtio.Net) or the
// vhost-user-net backend server (package vunet). Queue pair i moves its
// packets through TAP queue i.
type TAPBackend struct{ dev *tap.Device }

var _ virtio.NetBackend = TAPBackend{}

// NewTAPBackend returns the backend over dev, which stays the caller's to
// close.
func NewTAPBackend(dev *tap.Device) TAPBackend { return TAPBackend{dev: dev} }

// Offloads returns the offloads to offer: those the TAP accepted.
func (b TAPBackend) Offloads() virtio.NetOffloads { return tapOffloads(b.dev.SupportedOffloads()) }

// Pair implements virtio.NetBackend: TAP queue i.
func (b TAPBackend) Pair(i int) virtio.PollablePacketIO { return b.dev.Queue(i) }

// SetOffloads implements virtio.NetBackend with TUNSETOFFLOAD.
func (b TAPBackend) SetOffloads(o virtio.NetOffloads) error {
	var t tap.Offload
	if o&virtio.NetOffloadCsum != 0 {
		t |= tap.OffloadCsum
	}
	if o&virtio.NetOffloadTSO4 != 0 {
		t |= tap.OffloadTSO4
	}
	if o&virtio.NetOffloadTSO6 != 0 {
		t |= tap.OffloadTSO6
	}
	return b.dev.SetOffload(t)
}

// EnablePair implements virtio.NetBackend by attaching or detaching TAP
// queue i; a single-queue TAP has one queue, always attached.
func (b TAPBackend) EnablePair(i int, on bool) error {
	if !b.dev.MultiQueue() {
		return nil
	}
	return b.dev.Queue(i).SetAttached(on)
}

// tapOffloads maps what a TAP accepts to what a virtio-net device can
// offer (TSO only with checksum offload, as TUNSETOFFLOAD requires).
func tapOffloads(t tap.Offload) virtio.NetOffloads {
	var o virtio.NetOffloads
	if t&tap.OffloadCsum != 0 {
		o |= virtio.NetOffloadCsum
		if t&tap.OffloadTSO4 != 0 {
			o |= virtio.NetOffloadTSO4
		}
		if t&tap.OffloadTSO6 != 0 {
			o |= virtio.NetOffloadTSO6
		}
	}
	return o
}
