package mmio_test

import (
	"fmt"
	"os"

	"github.com/govmm/govmm/mmio"
)

// Wiring the legacy PC ports on a port-I/O bus, then replaying what a vCPU
// exit loop would hand to it.
func Example() {
	pio := mmio.NewBus("pio")
	serial := mmio.NewSerial(os.Stdout, nil) // the VMM passes an irqfd-backed Interrupt
	exitCode := -1
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(pio.Insert(mmio.COM1Port, mmio.SerialSize, serial))
	must(pio.Insert(mmio.DebugExitPort, mmio.DebugExitSize, mmio.NewDebugExit(func(c uint8) { exitCode = int(c) })))
	must(mmio.NewI8042(func() { fmt.Println("reset") }).Attach(pio))
	must(pio.Insert(mmio.POSTPort, 1, mmio.NewSink(0xff)))

	for _, c := range []byte("hello\n") {
		_ = pio.Write(mmio.COM1Port, []byte{c}) // outb to THR
	}
	_ = pio.Write(mmio.DebugExitPort, []byte{7})
	fmt.Println("exit code", exitCode)

	err := pio.Read(0x3000, make([]byte, 2))
	fmt.Println(err)
	// Output:
	// hello
	// exit code 7
	// pio bus: read of 2 bytes at 0x3000: no device covers it
}
