package virtiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/govmm/govmm/mmio"
	"github.com/govmm/govmm/virtio"
)

// virtio-mmio register offsets, as a driver uses them.
const (
	RegMagicValue        = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegSHMSel            = 0x0ac
	RegSHMLenLow         = 0x0b0
	RegSHMLenHigh        = 0x0b4
	RegSHMBaseLow        = 0x0b8
	RegSHMBaseHigh       = 0x0bc
	RegQueueReset        = 0x0c0
	RegConfigGeneration  = 0x0fc
	RegConfig            = 0x100
)

// ReadReg performs a 32-bit register read.
func ReadReg(dev mmio.Device, off uint64) uint32 {
	var b [4]byte
	dev.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// WriteReg performs a 32-bit register write.
func WriteReg(dev mmio.Device, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	dev.Write(off, b[:])
}

// DeviceFeatures reads the 64 offered feature bits.
func DeviceFeatures(dev mmio.Device) uint64 {
	WriteReg(dev, RegDeviceFeaturesSel, 0)
	lo := ReadReg(dev, RegDeviceFeatures)
	WriteReg(dev, RegDeviceFeaturesSel, 1)
	hi := ReadReg(dev, RegDeviceFeatures)
	return uint64(hi)<<32 | uint64(lo)
}

// SetupQueue programs queue index from d's layout and sets QueueReady.
func SetupQueue(dev mmio.Device, index uint32, d *Driver) {
	WriteReg(dev, RegQueueSel, index)
	WriteReg(dev, RegQueueNum, uint32(d.Size))
	for _, r := range []struct {
		lo   uint64
		addr uint64
	}{{RegQueueDescLow, d.DescAddr}, {RegQueueDriverLow, d.AvailAddr}, {RegQueueDeviceLow, d.UsedAddr}} {
		WriteReg(dev, r.lo, uint32(r.addr))
		WriteReg(dev, r.lo+4, uint32(r.addr>>32))
	}
	WriteReg(dev, RegQueueReady, 1)
}

// InitMMIO initialises a virtio-mmio device the way a driver does: check
// magic and version, reset, ACKNOWLEDGE, DRIVER, write features (which
// must include VERSION_1), FEATURES_OK (and check it stuck), set up queue i
// from drivers[i] (nil entries are skipped), then DRIVER_OK. It fails if
// the device refused the features or needs a reset after DRIVER_OK. Each
// driver's EventIdx is set from features.
func InitMMIO(dev mmio.Device, features uint64, drivers ...*Driver) error {
	if m := ReadReg(dev, RegMagicValue); m != virtio.MMIOMagic {
		return fmt.Errorf("virtiotest: magic %#x", m)
	}
	if v := ReadReg(dev, RegVersion); v != virtio.MMIOVersion {
		return fmt.Errorf("virtiotest: version %d", v)
	}
	WriteReg(dev, RegStatus, 0)
	status := virtio.StatusAcknowledge
	WriteReg(dev, RegStatus, status)
	status |= virtio.StatusDriver
	WriteReg(dev, RegStatus, status)
	WriteReg(dev, RegDriverFeaturesSel, 0)
	WriteReg(dev, RegDriverFeatures, uint32(features))
	WriteReg(dev, RegDriverFeaturesSel, 1)
	WriteReg(dev, RegDriverFeatures, uint32(features>>32))
	status |= virtio.StatusFeaturesOK
	WriteReg(dev, RegStatus, status)
	if got := ReadReg(dev, RegStatus); got&virtio.StatusFeaturesOK == 0 {
		WriteReg(dev, RegStatus, got|virtio.StatusFailed)
		return fmt.Errorf("virtiotest: device refused features %#x (status %#x)", features, got)
	}
	for i, d := range drivers {
		if d == nil {
			continue
		}
		d.EventIdx = features&virtio.FeatureRingEventIdx != 0
		SetupQueue(dev, uint32(i), d)
	}
	status |= virtio.StatusDriverOK
	WriteReg(dev, RegStatus, status)
	if got := ReadReg(dev, RegStatus); got&virtio.StatusNeedsReset != 0 || got&virtio.StatusDriverOK == 0 {
		return fmt.Errorf("virtiotest: device failed at DRIVER_OK (status %#x)", got)
	}
	return nil
}
