package vhostnet

import (
	"testing"

	"github.com/govmm/govmm/tap"
	"github.com/govmm/govmm/virtio"
)

// The device is offered what the TAP accepted, and the guest offloads it
// negotiates go back to TUNSETOFFLOAD flags.
func TestTAPOffloadMapping(t *testing.T) {
	for _, tc := range []struct {
		t tap.Offload
		v virtio.NetOffloads
	}{
		{0, 0},
		{tap.OffloadCsum, virtio.NetOffloadCsum},
		{tap.OffloadCsum | tap.OffloadTSO4, virtio.NetOffloadCsum | virtio.NetOffloadTSO4},
		{tap.OffloadCsum | tap.OffloadTSO4 | tap.OffloadTSO6, virtio.NetOffloadCsum | virtio.NetOffloadTSO4 | virtio.NetOffloadTSO6},
		{tap.OffloadCsum | tap.OffloadUFO, virtio.NetOffloadCsum},
	} {
		if got := tapOffloads(tc.t); got != tc.v {
			t.Errorf("tapOffloads(%#x) = %#x, want %#x", tc.t, got, tc.v)
		}
	}
}
