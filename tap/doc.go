// Package tap opens Linux TAP devices for govmm's network data path: a
// multi-queue TAP with a virtio-net header (IFF_VNET_HDR) in front of
// every frame, one file descriptor per queue.
//
// Why it is shaped this way:
//
//   - One queue per virtio-net queue pair. With IFF_MULTI_QUEUE the kernel
//     spreads the packets it sends towards the guest over the queues by
//     flow, and each queue pair's worker owns one queue fd, so pairs never
//     share a lock. Queues can be detached (TUNSETQUEUE) so the kernel
//     only steers packets to the pairs the guest enabled.
//
//   - The vnet header is the virtio-net header. With TUNSETVNETHDRSZ 12 a
//     TAP read or write starts with struct virtio_net_hdr_v1, exactly what
//     a virtio 1.x driver puts in front of its frames, so a device moves
//     frames without translating headers; SetOffload (TUNSETOFFLOAD) says
//     which offloads (partial checksums, TSO) the reader accepts.
//
//   - Created or attached, and cleaned up accordingly. Open looks the name
//     up through netlink: a TAP that exists is attached to as it is (its
//     addresses, MTU and state are the administrator's); a missing one is
//     created, brought up, and removed again by Close. The netlink handle
//     is bound to the network namespace Open ran in, so Close removes the
//     right interface whichever thread calls it.
//
//   - Queue fds are non-blocking and are not registered with the Go
//     runtime's poller: their users (the virtio-net workers) wait for them
//     in epoll sets of their own, next to the queues' kick eventfds, and
//     read and write them with one system call per packet (ReadPacket,
//     WritePacket). SyscallConn gives the fd for epoll or for
//     VHOST_NET_SET_BACKEND without exposing a raw integer.
package tap
