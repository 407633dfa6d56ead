// Package virtio is the device side of virtio 1.x for govmm: bounds-checked
// access to guest memory, the split virtqueue, and the virtio-mmio
// (version 2) transport. Device models (virtio-net) plug into the transport
// through the Device interface and move data with Queue.
//
// Why it is shaped this way:
//
//   - Everything the guest writes is hostile input. Descriptor tables, ring
//     indexes, buffer addresses and register values are validated before
//     use, and every failure is an error value (never a panic). A queue the
//     guest has corrupted returns a typed error from Pop and stays broken;
//     the device reports it through Activation.Fail and the transport sets
//     DEVICE_NEEDS_RESET and raises a configuration-change interrupt. The
//     VMM keeps running and the guest can reset the device.
//
//   - The guest's memory is shared with vCPUs running concurrently, so the
//     ring indexes are read and written with single, ordered accesses
//     (memory_unsafe.go) in the order the split ring needs: read avail.idx,
//     then (acquire) read ring entries and descriptors; write used
//     elements, then (release) publish used.idx; and a full barrier between
//     publishing used.idx (or avail_event) and reading the driver's
//     suppression fields (used_event, avail.idx), without which an
//     interrupt or a kick can be lost.
//
//   - Transport and device are separate. The transport owns the register
//     state machine, feature negotiation, interrupt status and the queue
//     notifiers; the device only sees an Activation (memory, ready queues,
//     negotiated features, an Interrupt, kick eventfds) at DRIVER_OK and a
//     Reset. The queue-pair data path therefore does not care whether the
//     VMM, a TAP worker or a vhost-user backend drives it.
//
//   - Queue notifiers are ioeventfds, and all of a device's notifiers are
//     registered in one IoEvents transaction (one sort-and-diff for N
//     queues). A coordinator that wants several devices in one commit can
//     take the registration over (MMIOConfig.ExternalNotifiers).
//
// The virtiotest sub-package is the driver side: it lays out rings in a
// byte slice and adds chains, so queue users can test against it.
package virtio
