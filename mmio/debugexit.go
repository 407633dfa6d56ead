package mmio

// DebugExit is a write-only port through which a guest ends the VM with a
// status: writing byte V at offset 0 calls onExit(V). govmm maps it at
// DebugExitPort and exits with status V, which is how the tiny test kernels
// report success or failure. Reads return 0. Unlike QEMU's isa-debug-exit,
// the value is passed through unchanged (no (V<<1)|1 encoding).
type DebugExit struct {
	onExit func(code uint8)
}

// NewDebugExit returns a DebugExit that calls onExit for every write at
// offset 0. onExit runs on the writing vCPU's goroutine, without any bus
// lock held; it should only record the code and ask the VM to stop, not
// wait for the vCPUs to stop (it is running on one). A nil onExit makes
// writes no-ops.
func NewDebugExit(onExit func(code uint8)) *DebugExit {
	return &DebugExit{onExit: onExit}
}

// Read fills data with zeros.
func (d *DebugExit) Read(_ uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

// Write calls onExit with the first byte of a write at offset 0 (for a wider
// write, its least significant byte). Writes elsewhere are ignored.
func (d *DebugExit) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) == 0 || d.onExit == nil {
		return
	}
	d.onExit(data[0])
}
