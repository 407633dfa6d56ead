package mmio

// Conventional PC port-I/O addresses of the legacy devices in this package,
// for the VMM to insert them at. Each size is the number of ports the device
// decodes.
const (
	// COM1Port is the first serial port; the Serial decodes 8 ports from
	// there (SerialSize) and interrupts on ISA IRQ COM1IRQ.
	COM1Port   = 0x3f8
	COM1IRQ    = 4
	SerialSize = 8

	// DebugExitPort is where govmm maps the DebugExit device. It decodes two
	// ports (so that an outw at 0x501 is not unmapped); only a write at
	// offset 0 exits.
	DebugExitPort = 0x501
	DebugExitSize = 2

	// I8042DataPort and I8042CommandPort are the keyboard controller's two
	// ports, one byte each; see (*I8042).Attach.
	I8042DataPort    = 0x60
	I8042CommandPort = 0x64

	// POSTPort is the BIOS POST-code port (also used for I/O delays by
	// Linux's outb_p); a Sink fits it.
	POSTPort = 0x80
)
