// Package vhostuser implements the vhost-user protocol: the control plane
// that lets a VMM (the front-end) hand a virtio device's queues to another
// process (the back-end) over a Unix socket. The back-end maps guest memory
// from file descriptors the front-end sends, reads kicks from the
// ioeventfds the VMM registered with KVM, and signals interrupts through
// irqfds, so the data path never passes through the VMM.
//
// The package knows the protocol and nothing about devices:
//
//   - Wire format: [Message], the payload types ([U64], [VringState],
//     [VringAddr], [MemoryTable], [SingleMemoryRegion], [ConfigSpace],
//     [VringFile]) and [DecodeMessage], which validates everything a peer
//     controls (sizes per request and direction, flags, region counts and
//     ranges, descriptor counts) and returns a [*ProtocolError] instead of
//     panicking. Surplus descriptors are closed, never leaked.
//   - Transport: [ReadMessage] and [WriteMessage] move one message with its
//     descriptors (SCM_RIGHTS, at most [MaxFDs]) over a *net.UnixConn,
//     handling short reads and writes.
//   - [Frontend]: the VMM side, as client ([Dial]) or server ([Listen]),
//     one method per request, with per-request timeouts, REPLY_ACK and
//     reply validation.
//   - [Serve] and [Handler]: the back-end side. Serve enforces feature
//     negotiation and gating; the Handler supplies device behaviour. A
//     vhost-user-net back-end is a Handler built on the virtio package.
//   - [MemoryMap]: the back-end's mapping of the memory table, translating
//     guest-physical and front-end user addresses with bounds checks.
//
// Why a separate package: both the attach path (a Frontend driving a
// back-end, next to the kernel vhost-net transport) and the
// vhost-user-net back-end server use it, and keeping device logic out
// lets the protocol be tested, and fuzzed, on its own.
//
// A typical front-end sequence, as QEMU runs it for a net device:
//
//	features, proto, _ := fe.NegotiateProtocolFeatures(vhostuser.SupportedProtocolFeatures)
//	fe.SetOwner()
//	fe.SetFeatures(features & wanted)
//	fe.SetMemTable(regions)
//	for each queue: SetVringNum, SetVringBase, SetVringAddr,
//	                SetVringKick(ioeventfd), SetVringCall(irqfd)
//	SetVringEnable(q, true) for each active queue (if bit 30 was offered)
//	... GetVringBase(q) for each queue to stop.
package vhostuser
