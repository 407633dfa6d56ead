package virtio

// Feature bits (as masks) that the transport or the split ring interpret.
// Device-specific bits (below 24) belong to the device models.
const (
	// FeatureRingIndirectDesc: descriptors may point at indirect tables
	// (VIRTIO_RING_F_INDIRECT_DESC, bit 28).
	FeatureRingIndirectDesc uint64 = 1 << 28
	// FeatureRingEventIdx: used_event / avail_event suppression
	// (VIRTIO_RING_F_EVENT_IDX, bit 29).
	FeatureRingEventIdx uint64 = 1 << 29
	// FeatureVersion1: a virtio 1.x (non-legacy) device (VIRTIO_F_VERSION_1,
	// bit 32). The MMIO transport always offers it and refuses FEATURES_OK
	// without it.
	FeatureVersion1 uint64 = 1 << 32
	// FeatureAccessPlatform: VIRTIO_F_ACCESS_PLATFORM (bit 33).
	FeatureAccessPlatform uint64 = 1 << 33
	// FeatureRingPacked: the packed ring layout (VIRTIO_F_RING_PACKED,
	// bit 34). Not implemented: the transport never offers it.
	FeatureRingPacked uint64 = 1 << 34
	// FeatureInOrder: VIRTIO_F_IN_ORDER (bit 35).
	FeatureInOrder uint64 = 1 << 35
	// FeatureNotificationData: VIRTIO_F_NOTIFICATION_DATA (bit 38). Not
	// implemented: the transport never offers it, so a QueueNotify value
	// is always a queue index.
	FeatureNotificationData uint64 = 1 << 38
	// FeatureRingReset: per-queue reset (VIRTIO_F_RING_RESET, bit 40). Not
	// implemented: the transport never offers it.
	FeatureRingReset uint64 = 1 << 40

	// transportUnsupported are removed from what a device offers: the
	// transport and Queue cannot honour them.
	transportUnsupported = FeatureRingPacked | FeatureNotificationData | FeatureRingReset
)

// Device status bits (the Status register).
const (
	StatusAcknowledge uint32 = 1
	StatusDriver      uint32 = 2
	StatusDriverOK    uint32 = 4
	StatusFeaturesOK  uint32 = 8
	// StatusNeedsReset is set by the device (here: the transport) when it
	// hit an error it cannot recover from without a reset.
	StatusNeedsReset uint32 = 0x40
	StatusFailed     uint32 = 0x80
)

// Interrupt reasons: the bits of the InterruptStatus register.
const (
	InterruptUsedBuffer   uint32 = 1
	InterruptConfigChange uint32 = 2
)

// Device IDs (the DeviceID register).
const (
	DeviceIDNet     uint32 = 1
	DeviceIDBlock   uint32 = 2
	DeviceIDConsole uint32 = 3
	DeviceIDEntropy uint32 = 4
)

// Split-ring flags.
const (
	// DescFNext: the descriptor continues via its next field.
	DescFNext uint16 = 1
	// DescFWrite: the buffer is device-writable.
	DescFWrite uint16 = 2
	// DescFIndirect: the buffer is a table of descriptors.
	DescFIndirect uint16 = 4

	// AvailFNoInterrupt: the driver asks for no used-buffer notifications
	// (ignored with EVENT_IDX).
	AvailFNoInterrupt uint16 = 1
	// UsedFNoNotify: the device asks for no available-buffer notifications
	// (ignored with EVENT_IDX).
	UsedFNoNotify uint16 = 1
)

// QueueSizeMax is the largest split-queue size (2^15).
const QueueSizeMax = 32768

// DescSize is the size of one descriptor (struct virtq_desc).
const DescSize = 16
