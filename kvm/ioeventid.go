package kvm

// IoEventID identifies one ioeventfd registration in an ioeventfd address
// space. IDs are never reused, so they stay valid keys even after the
// kernel recycles the eventfd's descriptor number.
type IoEventID uint64
