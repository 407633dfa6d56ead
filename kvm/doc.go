// Package kvm is govmm's thin, typed layer over the Linux KVM API.
//
// One Go type owns each kind of file descriptor: System (/dev/kvm), VM
// (a KVM_CREATE_VM fd) and VCPU (a KVM_CREATE_VCPU fd plus its kvm_run
// mapping). A VM can only be obtained from a System and a VCPU only from a
// VM, so the ioctl a method issues always goes to the right kind of fd.
// Close is idempotent everywhere and releases everything the value owns.
//
// Errors name the ioctl and wrap the errno, so callers can both print a
// useful message and test errors.Is(err, unix.EEXIST). All ioctl numbers
// live in ioctls.go; every C struct mirror lives in a *_unsafe.go file and
// names the C struct it mirrors. abi_test.go checks both against the
// kernel headers.
//
// The package also holds the ioeventfd address space (IoEventSpace): the
// transactional, sort-and-diff-once registry through which govmm installs
// every KVM_IOEVENTFD, so that attaching many multi-queue devices costs one
// diff rather than one per queue. Its transactions (IoEventTxn) are owned
// and serialised, one open at a time: govmm has no big lock, so virtio
// transports and the vhost attacher use the space from independent
// goroutines, and a shared transaction would let one caller's commit
// (or failure) decide the fate of another's changes.
package kvm
