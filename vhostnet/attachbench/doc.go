// Package attachbench measures govmm's vhost attach path end to end, in
// one process: D in-process vhost-user-net backends, a KVM VM with D
// virtio-mmio net devices of P queue pairs each, all started together
// (the register writes a driver makes, up to DRIVER_OK, inside one
// Attacher batch: the code path a guest's DRIVER_OK reaches) and stopped
// together (device resets), round after round.
//
// Each round runs both commit modes on the same devices, alternately:
// batched (one ioeventfd commit for every queue of every device) and per
// queue (one commit per queue, QEMU's behaviour before it batched
// vhost-net host notifiers). For attach and detach it reports the two
// phases apart: the notifier phase (creating and registering the queue
// eventfds, or deregistering, draining and closing them: what the seed
// change measured) and the backend-messaging phase (the vhost-user start
// or stop sequence, devices in parallel). Ratios come from the same run;
// absolute times mean little across hosts.
package attachbench
