package vhostnet

import "github.com/govmm/govmm/virtio"

// virtio-net feature bits (as masks) the vhost-backed device deals with.
const (
	netFCsum          uint64 = 1 << 0
	netFGuestCsum     uint64 = 1 << 1
	netFMAC           uint64 = 1 << 5
	netFGuestTSO4     uint64 = 1 << 7
	netFGuestTSO6     uint64 = 1 << 8
	netFGuestECN      uint64 = 1 << 9
	netFGuestUFO      uint64 = 1 << 10
	netFHostTSO4      uint64 = 1 << 11
	netFHostTSO6      uint64 = 1 << 12
	netFHostECN       uint64 = 1 << 13
	netFHostUFO       uint64 = 1 << 14
	netFMrgRxbuf      uint64 = 1 << 15
	netFStatus        uint64 = 1 << 16
	netFCtrlVQ        uint64 = 1 << 17
	netFCtrlRx        uint64 = 1 << 18
	netFCtrlVLAN      uint64 = 1 << 19
	netFGuestAnnounce uint64 = 1 << 21
	netFMQ            uint64 = 1 << 22

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
)

// virtio-net configuration space layout (struct virtio_net_config).
const (
	netCfgMAC       = 0
	netCfgStatus    = 6
	netCfgMaxPairs  = 8
	netCfgSize      = 10
	netStatusLinkUp = 1
)

// Control queue (VIRTIO_NET_F_CTRL_VQ) classes, commands and acks.
const (
	ctrlClassRx       = 0
	ctrlClassMAC      = 1
	ctrlClassVLAN     = 2
	ctrlClassAnnounce = 3
	ctrlClassMQ       = 4
	ctrlMQPairsSet    = 0
	ctrlOK            = 0
	ctrlErr           = 1
	ctrlQueueSize     = 64
)

// DefaultQueueSize is the largest queue size the device offers.
const DefaultQueueSize = 256
