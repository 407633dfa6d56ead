package mmio

// sink ignores writes and reads a constant byte.
type sink struct{ v byte }

// NewSink returns a stateless device that ignores writes and fills every
// read with readValue. It stands in for ports a guest touches that govmm
// does not emulate: 0xff for "nothing here" (e.g. the POST-code port 0x80),
// or another value where a guest wants a particular answer.
func NewSink(readValue byte) Device { return sink{v: readValue} }

func (s sink) Read(_ uint64, data []byte) {
	for i := range data {
		data[i] = s.v
	}
}

func (sink) Write(uint64, []byte) {}
