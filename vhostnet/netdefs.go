package vhostnet

import "github.com/govmm/govmm/virtio"

// The virtio-net feature bits and control commands are virtio's; these
// short names keep the device code readable.
const (
	netFCsum      = virtio.NetFCsum
	netFGuestCsum = virtio.NetFGuestCsum
	netFMAC       = virtio.NetFMAC
	netFGuestTSO4 = virtio.NetFGuestTSO4
	netFGuestTSO6 = virtio.NetFGuestTSO6
	netFGuestECN  = virtio.NetFGuestECN
	netFGuestUFO  = virtio.NetFGuestUFO
	netFHostTSO4  = virtio.NetFHostTSO4
	netFHostTSO6  = virtio.NetFHostTSO6
	netFHostECN   = virtio.NetFHostECN
	netFHostUFO   = virtio.NetFHostUFO
	netFMrgRxbuf  = virtio.NetFMrgRxbuf
	netFStatus    = virtio.NetFStatus
	netFCtrlVQ    = virtio.NetFCtrlVQ
	netFMQ        = virtio.NetFMQ

	// backendFeatures are the bits that describe the data path, so they
	// are offered to the guest only when the backend offers them, and
	// passed on to it in SET_FEATURES.
	backendFeatures = netFCsum | netFGuestCsum | netFGuestTSO4 | netFGuestTSO6 |
		netFGuestECN | netFGuestUFO | netFHostTSO4 | netFHostTSO6 | netFHostECN |
		netFHostUFO | netFMrgRxbuf | virtio.FeatureRingIndirectDesc |
		virtio.FeatureRingEventIdx | virtio.FeatureVersion1

	// vmmFeatures are implemented by the VMM itself (configuration space,
	// control queue) whatever the backend.
	vmmFeatures = netFMAC | netFStatus | netFCtrlVQ

	ctrlClassRx       = virtio.NetCtrlRX
	ctrlClassMAC      = virtio.NetCtrlMAC
	ctrlClassVLAN     = virtio.NetCtrlVLAN
	ctrlClassAnnounce = virtio.NetCtrlAnnounce
	ctrlClassMQ       = virtio.NetCtrlMQ
	ctrlMQPairsSet    = virtio.NetCtrlMQPairsSet
	ctrlOK            = virtio.NetCtrlOK
	ctrlErr           = virtio.NetCtrlErr
)

// virtio-net configuration space layout (struct virtio_net_config: mac,
// status, max_virtqueue_pairs; MTU is not offered).
const (
	netCfgMAC       = 0
	netCfgStatus    = 6
	netCfgMaxPairs  = 8
	netCfgSize      = 10
	netStatusLinkUp = 1
	ctrlQueueSize   = 64
)

// DefaultQueueSize is the largest queue size the device offers.
const DefaultQueueSize = virtio.NetQueueSize
