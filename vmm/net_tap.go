package vmm

import "errors"

// addTAPNet is replaced by the userspace virtio-net device over a TAP.
func (m *Machine) addTAPNet(slot netSlot, nc NetConfig) error {
	return errors.New("the userspace TAP backend is not built yet")
}
