package vhostuser

import (
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sameFile(t *testing.T, a, b *os.File) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	fa, _ := fileFD(a)
	fb, _ := fileFD(b)
	if err := unix.Fstat(fa, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(fb, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func TestWriteReadMessageWithFDs(t *testing.T) {
	checkFDLeaks(t)
	a, b := socketPair(t)
	m1, m2 := newMemfd(t, 4096), newMemfd(t, 8192)
	out := &Message{
		Request: ReqSetMemTable, Flags: Version1,
		Payload: MemoryTable{Regions: []MemoryRegion{testRegion, {GuestPhysAddr: 0x1_0000_0000, Size: 0x1000, UserAddr: 0x1000}}},
		Files:   []*os.File{m1, m2},
	}
	if err := WriteMessage(a, out, ToBackend); err != nil {
		t.Fatalf("write: %v", err)
	}
	in, err := ReadMessage(b, ToBackend)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	defer in.Close()
	if !reflect.DeepEqual(in.Payload, out.Payload) {
		t.Errorf("payload = %+v, want %+v", in.Payload, out.Payload)
	}
	if len(in.Files) != 2 || !sameFile(t, in.Files[0], m1) || !sameFile(t, in.Files[1], m2) {
		t.Fatalf("received files do not match the sent ones in order")
	}
	// Received descriptors are close-on-exec.
	fd, _ := fileFD(in.Files[0])
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("received descriptor flags %#x (err %v), want FD_CLOEXEC", fl, err)
	}
}

// TestReadMessageShortReads sends a message in small pieces, with the
// descriptors on a middle piece; ReadMessage must reassemble it.
func TestReadMessageShortReads(t *testing.T) {
	checkFDLeaks(t)
	a, b := socketPair(t)
	ev := memfds(t, 1)[0]
	defer ev.Close()
	msg := rawMessage(ReqSetVringKick, Version1, u64Bytes(2))
	done := make(chan error, 1)
	go func() {
		pieces := [][]byte{msg[:1], msg[1:5], msg[5:13], msg[13:]}
		for i, p := range pieces {
			var err error
			if i == 2 {
				fd, _ := fileFD(ev)
				_, _, err = a.WriteMsgUnix(p, unix.UnixRights(fd), nil)
			} else {
				_, err = a.Write(p)
			}
			if err != nil {
				done <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		done <- nil
	}()
	m, err := ReadMessage(b, ToBackend)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	defer m.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m.Payload != (VringFile{Index: 2}) || len(m.Files) != 1 || !sameFile(t, m.Files[0], ev) {
		t.Errorf("got %+v with %d files", m.Payload, len(m.Files))
	}
}

func TestReadMessageErrors(t *testing.T) {
	checkFDLeaks(t)
	tests := []struct {
		name  string
		send  func(t *testing.T, c *net.UnixConn)
		check func(t *testing.T, err error)
	}{
		{
			name: "clean EOF",
			send: func(t *testing.T, c *net.UnixConn) {},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, io.EOF) {
					t.Errorf("err = %v, want io.EOF", err)
				}
			},
		},
		{
			name: "EOF inside header",
			send: func(t *testing.T, c *net.UnixConn) { c.Write([]byte{1, 0, 0}) },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
				}
			},
		},
		{
			name: "EOF inside payload with fd",
			send: func(t *testing.T, c *net.UnixConn) {
				f := memfds(t, 1)[0]
				defer f.Close()
				sendRaw(t, c, rawMessage(ReqSetVringCall, Version1, u64Bytes(1))[:14], f)
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
				}
			},
		},
		{
			name: "oversize payload",
			send: func(t *testing.T, c *net.UnixConn) {
				h := rawMessage(ReqSetOwner, Version1, nil)
				ne.PutUint32(h[8:], 1<<20)
				c.Write(h)
			},
			check: wantProtocolError("exceeds"),
		},
		{
			name: "nine descriptors",
			send: func(t *testing.T, c *net.UnixConn) {
				files := memfds(t, 9)
				sendRaw(t, c, rawMessage(ReqSetOwner, Version1, nil), files...)
				closeFiles(files)
			},
			check: wantProtocolError("too many"),
		},
		{
			name: "descriptors split over pieces",
			send: func(t *testing.T, c *net.UnixConn) {
				files := memfds(t, 10)
				msg := rawMessage(ReqSetLogBase, Version1, make([]byte, 16))
				sendRaw(t, c, msg[:HeaderSize], files[:5]...)
				time.Sleep(10 * time.Millisecond)
				sendRaw(t, c, msg[HeaderSize:], files[5:]...)
				closeFiles(files)
			},
			check: wantProtocolError("too many"),
		},
		{
			name: "wrong fd count",
			send: func(t *testing.T, c *net.UnixConn) {
				files := memfds(t, 2)
				sendRaw(t, c, rawMessage(ReqSetVringKick, Version1, u64Bytes(1)), files...)
				closeFiles(files)
			},
			check: wantProtocolError("expected 1"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketPair(t)
			tc.send(t, a)
			a.Close()
			m, err := ReadMessage(b, ToBackend)
			if err == nil {
				m.Close()
				t.Fatalf("read %+v, want error", m)
			}
			tc.check(t, err)
		})
	}
}

func wantProtocolError(reason string) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Fatalf("err = %v (%T), want *ProtocolError", err, err)
		}
		if !strings.Contains(pe.Reason, reason) {
			t.Errorf("reason %q does not mention %q", pe.Reason, reason)
		}
	}
}

func TestWriteMessageRefusesTooManyFDs(t *testing.T) {
	a, _ := socketPair(t)
	files := make([]*os.File, 9)
	for i := range files {
		files[i] = newMemfd(t, 0)
	}
	m := &Message{Request: ReqSetOwner, Flags: Version1, Files: files}
	if err := WriteMessage(a, m, ToBackend); err == nil {
		t.Fatal("sent nine descriptors")
	}
}
