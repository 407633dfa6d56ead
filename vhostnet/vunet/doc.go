// Package vunet is govmm's vhost-user-net backend: the process on the
// other end of a VMM's vhost-user socket that moves a virtio-net device's
// packets between guest memory and a (multi-queue) TAP, so that the VMM
// is not on the data path at all.
//
// Why it is shaped this way:
//
//   - It reuses the VMM's own data path. Each queue pair runs a
//     virtio.NetQueuePair driven by a virtio.NetPairWorker, exactly as
//     govmm's userspace virtio-net device does; only the plumbing differs:
//     the queues are built from SET_VRING_* over guest memory mapped from
//     the front-end's memory table (vhostuser.MemoryMap), kicks come from
//     the front-end's eventfds (KVM ioeventfds), and used-buffer
//     notifications go to its call eventfds (KVM irqfds). MRG_RXBUF,
//     EVENT_IDX, INDIRECT_DESC and MQ come with it.
//
//   - The protocol is vhostuser.Serve's job; this package is a Handler that
//     supplies device semantics: ring life cycle (a ring starts when its
//     kick fd arrives and, with protocol features, it is enabled; a pair
//     runs when both its rings do; GET_VRING_BASE stops it and returns
//     where it stopped, rewinding receive buffers it took but did not
//     fill), and TAP queue steering (a pair's TAP queue is attached only
//     while the pair runs, so the kernel never queues packets nobody
//     reads).
//
//   - One session at a time, any number of sessions in a row. The TAP
//     outlives the connections: when a front-end disconnects (or sends
//     garbage, which ends its session), every worker stops, every fd it
//     sent is closed and guest memory is unmapped; the next front-end (a
//     VMM restarting the device after a backend restart, or a new VM)
//     starts from a clean state.
package vunet
