package virtio

import "github.com/govmm/govmm/kvm"

// Device is a virtio device model (virtio-net, ...) as a transport sees it.
//
// The transport calls DeviceID, Features, QueueMaxSizes, ReadConfig and
// WriteConfig from vCPU goroutines, possibly concurrently with the
// device's own workers; Activate and Reset are serialised by the transport
// (never concurrently with each other).
type Device interface {
	// DeviceID is the virtio device type (DeviceIDNet, ...).
	DeviceID() uint32
	// Features returns the feature bits the device offers. The transport
	// adds FeatureVersion1 and removes what it cannot support (packed
	// ring, notification data, ring reset).
	Features() uint64
	// QueueMaxSizes returns the maximum size of each virtqueue, one entry
	// per queue; each must be a power of two no larger than QueueSizeMax.
	// Called once, by NewMMIOTransport.
	QueueMaxSizes() []uint16
	// ReadConfig fills data from the device-specific configuration space
	// at offset (relative to the start of that space). The guest chooses
	// offset and len(data): out-of-range bytes must read as 0, never panic.
	ReadConfig(offset uint64, data []byte)
	// WriteConfig stores data into the configuration space at offset;
	// out-of-range or read-only bytes are ignored.
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device at DRIVER_OK. The device owns a until
	// Reset. On error the device must have released whatever it acquired
	// (the transport calls Reset anyway, then sets DEVICE_NEEDS_RESET).
	// Chains may already be available in the queues: a device must look
	// at them once after starting, not only after the first kick.
	Activate(a Activation) error
	// Reset stops every worker of the device and releases per-activation
	// state; when it returns nothing may touch a's queues, memory, kicks
	// or interrupt any more. The transport then resets its own registers
	// and queues and releases the kick eventfds. Reset is called on every
	// guest reset (Status = 0), even if the device was never activated.
	Reset()
}

// QueueNotifier is implemented by devices that want available-buffer
// notifications which arrive as MMIO exits (when the transport has no
// ioeventfd for the queue: MMIOConfig.IoEvents is nil, or
// ExternalNotifiers is set). NotifyQueue is called from a vCPU goroutine
// with the transport's lock held: it must not block and must not call back
// into the transport's register interface.
type QueueNotifier interface {
	NotifyQueue(queue int)
}

// Activation is what a device receives at DRIVER_OK.
type Activation struct {
	// Mem is the guest's memory.
	Mem *GuestMemory
	// Queues has one entry per virtqueue of the device (index = queue
	// index). Ready queues are bound (Init done); others have Ready false
	// and must not be used.
	Queues []*Queue
	// Features is the negotiated feature set.
	Features uint64
	// Interrupt raises used-buffer and configuration-change interrupts.
	Interrupt Interrupt
	// Kicks has one entry per queue: the eventfd KVM signals when the
	// guest writes the queue's index to QueueNotify, or nil (queue not
	// ready, or no ioeventfd in use: then kicks reach QueueNotifier). The
	// transport owns them and releases them after Device.Reset; a device
	// reads (Drain) and polls them, it never closes them.
	Kicks []*kvm.EventFD
	// Notify describes each queue's doorbell (one entry per queue), for a
	// device or coordinator that registers its own ioeventfds
	// (MMIOConfig.ExternalNotifiers).
	Notify []NotifySpec
	// Fail reports an error the device cannot recover from (typically a
	// broken queue: Pop returned an error). The transport sets
	// DEVICE_NEEDS_RESET and raises a configuration-change interrupt; the
	// device should stop processing until Reset. Safe to call from any
	// goroutine, any number of times.
	Fail func(err error)
}

// Interrupt is how a device notifies the driver. reason is a mask of
// InterruptUsedBuffer and InterruptConfigChange. The transport's
// implementation sets the bits in InterruptStatus (a configuration change
// also bumps ConfigGeneration) and then triggers the device's IRQ. Safe
// for concurrent use.
type Interrupt interface {
	Signal(reason uint32) error
}

// IRQTrigger asserts the transport's interrupt line: in production an
// irqfd (*kvm.EventFD's Signal), in tests a counter.
type IRQTrigger interface {
	Trigger() error
}

// IoEvents is the ioeventfd registry the transport registers its queue
// notifiers with; *kvm.IoEventSpace satisfies it. Begin opens a
// transaction owned by the caller (waiting while another caller's is
// open); its Add and RemoveAndClose stage changes that its outermost
// Commit applies, and Abort drops them. RemoveAndClose hands the eventfd
// over: it is closed only after the commit that removed the entry
// succeeded. A failed commit discards everything the transaction staged,
// and nothing of any other caller's.
type IoEvents interface {
	Begin() kvm.IoEventTxn
}

// NotifySpec is one queue's doorbell: a 4-byte guest write of Datamatch
// (the queue index) at Addr (the transport's QueueNotify register).
type NotifySpec struct {
	Queue     int
	Addr      uint64
	Datamatch uint64
}

// Ioeventfd returns the KVM registration that routes this doorbell to ev.
func (s NotifySpec) Ioeventfd(ev *kvm.EventFD) kvm.Ioeventfd {
	return kvm.Ioeventfd{
		Space:        kvm.SpaceMMIO,
		Addr:         s.Addr,
		Len:          4,
		HasDatamatch: true,
		Datamatch:    s.Datamatch,
		Event:        ev,
	}
}
