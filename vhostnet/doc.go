// Package vhostnet puts a virtio-net device's data queues in a vhost
// backend, outside the VMM: a vhost-user-net process reached over a Unix
// socket, or the kernel's vhost-net. The VMM keeps the device's
// configuration space and control queue; the backend reads guest memory
// itself, is kicked by KVM ioeventfds and interrupts the guest through a
// KVM irqfd, so no packet crosses the VMM.
//
// Why it is shaped this way:
//
//   - One message set, two transports. Backend is the vhost request set
//     (owner, features, protocol features, memory table, vring
//     num/addr/base/kick/call/enable, GET_VRING_BASE) with global queue
//     indexes; UserBackend carries it over vhost-user (vhostuser.Frontend:
//     SCM_RIGHTS, REPLY_ACK, validated replies) and KernelNet over one
//     /dev/vhost-net fd per queue pair bound to its own TAP queue
//     (VHOST_NET_SET_BACKEND). The device negotiates only what both sides
//     offer and honours the backend's queue-pair count.
//
//   - All notifiers of everything that starts together in one commit.
//     The Attacher is the attach/detach path: at DRIVER_OK (or for every
//     device of an Attacher.Batch, or of a reconnect wave) it creates one
//     eventfd per data queue, registers them all in one kvm.IoEventSpace
//     commit (4-byte writes of the queue index at QueueNotify), then hands
//     them to the backends as kick fds. Detach mirrors it: the backends
//     stop (GET_VRING_BASE), one commit deregisters every notifier, and
//     only then are the eventfds drained and closed: closing one before
//     the commit that removes it is what made QEMU abort with EBADF after
//     it batched vhost-net notifiers (16f6804c46). CommitPerQueue keeps the
//     old one-commit-per-queue behaviour for comparison (govmm bench
//     attach).
//
//   - Failures unwind exactly. A device whose eventfds, registration or
//     backend messaging fail has its own eventfds closed and registrations
//     removed, and is reported (the transport sets DEVICE_NEEDS_RESET);
//     the other devices of the operation carry on, and the VM keeps
//     running. A batched commit that fails is retried device by device so
//     only the culprit fails. A deregistration commit that fails leaves
//     the notifiers registered and open and is retried, never half done.
//
//   - Backend reconnect. When a vhost-user backend hangs up, the device
//     stops its queues (the bases it can no longer ask for are read from
//     the used rings) and removes their notifiers; when a backend is back
//     on the socket the device renegotiates and restarts every queue at its
//     saved base, batched with every other device reconnecting then, and
//     the guest never resets anything.
//
//   - Interrupt status. The backend's used-buffer interrupts reach the
//     guest without the VMM, so the transport must report the used-buffer
//     bit itself (virtio.MMIOConfig.UsedBufferAlways) or a virtio-mmio
//     driver that checks InterruptStatus would drop them.
//
//   - One TAP adapter. TAPBackend is the virtio.NetBackend over a
//     *tap.Device (pair i on TAP queue i, offloads mapped to
//     TUNSETOFFLOAD) for the data paths that run in user space: the VMM's
//     own virtio-net device and the vhost-user-net backend server.
//
// Subpackages: vhostuser (the protocol, both sides), vunet (the
// vhost-user-net backend server), attachbench (govmm bench attach).
package vhostnet
