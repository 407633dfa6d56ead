// Package notifierbench measures what govmm exists to make cheap: enabling
// and disabling the queue notifiers (KVM ioeventfds) of many multi-queue
// virtio-mmio devices on a real KVM VM.
//
// It times the same registrations four ways in one run, so the numbers are
// comparable with each other rather than with another machine:
//
//   - raw: one KVM_IOEVENTFD per entry and no bookkeeping at all, the floor
//     any userspace can reach;
//   - batched-device: one IoEventSpace transaction per device;
//   - batched-all: one transaction for every device (govmm's attach path);
//   - per-queue: one commit per entry, each of which rebuilds, sorts and
//     diffs the whole set, as QEMU did before it batched vhost-net host
//     notifiers (9.2): quadratic in userspace.
//
// The time spent inside the ioctls is measured separately, so each mode's
// userspace cost (total minus ioctl time) is visible next to the kernel's,
// which batching cannot remove: the kernel still takes one ioctl per entry.
// The `govmm bench notifiers` command prints the Result.
package notifierbench
