package vmm

import "errors"

// addVhostNet is replaced by the vhost attach path.
func (m *Machine) addVhostNet(slot netSlot, nc NetConfig) error {
	return errors.New("vhost backends are not built yet")
}
