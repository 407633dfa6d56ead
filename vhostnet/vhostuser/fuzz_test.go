package vhostuser

import (
	"errors"
	"os"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary bytes, with an arbitrary number of attached
// descriptors, to DecodeMessage in both directions. Properties: no panic;
// an error is a *ProtocolError and closes every descriptor; a success keeps
// exactly the descriptors the request uses (closing the rest) and
// re-encodes to a message that decodes to the same value.
func FuzzDecode(f *testing.F) {
	for _, s := range validSamples() {
		buf, err := s.m.encode(s.dir, s.nfds)
		if err != nil {
			f.Fatalf("seed %s: %v", s.name, err)
		}
		f.Add(buf, uint8(s.nfds), s.dir == ToFrontend)
	}
	f.Add([]byte{}, uint8(0), false)
	f.Add(rawMessage(ReqSetMemTable, Version1, []byte{9, 0, 0, 0, 0, 0, 0, 0}), uint8(9), false)
	f.Add(rawMessage(ReqGetConfig, Version1|FlagReply, nil), uint8(0), true)

	f.Fuzz(func(t *testing.T, data []byte, nfds uint8, reply bool) {
		dir := ToBackend
		if reply {
			dir = ToFrontend
		}
		n := int(nfds % 11) // up to MaxFDs+2
		files := memfds(t, n)
		m, err := DecodeMessage(data, files, dir)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ProtocolError", err, err)
			}
			for i, f := range files {
				if !isClosed(f) {
					t.Fatalf("file %d left open after error %v", i, err)
				}
			}
			return
		}
		kept := map[*os.File]bool{}
		for _, f := range m.Files {
			kept[f] = true
		}
		for i, f := range files {
			if !kept[f] && !isClosed(f) {
				t.Fatalf("file %d neither kept nor closed", i)
			}
		}
		// Re-encode and decode again: the value must survive.
		buf, err := m.encode(dir, len(m.Files))
		if err != nil {
			t.Fatalf("re-encode of accepted %v failed: %v", m.Request, err)
		}
		again, _, err := decode(buf, len(m.Files), dir)
		if err != nil {
			t.Fatalf("re-decode of %v failed: %v", m.Request, err)
		}
		if again.Request != m.Request || again.Flags != m.Flags || !reflect.DeepEqual(again.Payload, m.Payload) {
			t.Fatalf("round trip changed the message: %+v -> %+v", m, again)
		}
		if err := m.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	})
}
