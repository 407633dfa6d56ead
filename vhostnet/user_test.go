package vhostnet

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testutil"
	"github.com/govmm/govmm/vhostnet/vhostuser"
)

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c.(*net.UnixConn)
	}
	return cs[0], cs[1]
}

// TestUserBackendHangUp: Disconnected closes when the peer goes away,
// without any request in flight.
func TestUserBackendHangUp(t *testing.T) {
	defer testutil.CheckFDLeaks(t)()
	a, b := unixPair(t)
	ub, err := NewUserBackend(a, vhostuser.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ub.Disconnected():
		t.Fatal("disconnected while the peer is there")
	case <-time.After(20 * time.Millisecond):
	}
	b.Close()
	select {
	case <-ub.Disconnected():
	case <-time.After(5 * time.Second):
		t.Fatal("hang-up not noticed")
	}
	if _, err := ub.GetFeatures(); !errors.Is(err, ErrDisconnected) {
		t.Errorf("GetFeatures after hang-up: %v", err)
	}
	if err := ub.Close(); err != nil {
		t.Error(err)
	}
	ub.Close()
}

// TestUserBackendBadReply: a reply for the wrong request is a connection
// failure (ErrDisconnected), and Disconnected closes even though the
// peer is still connected.
func TestUserBackendBadReply(t *testing.T) {
	defer testutil.CheckFDLeaks(t)()
	a, b := unixPair(t)
	defer b.Close()
	ub, err := NewUserBackend(a, vhostuser.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ub.Close()
	go func() {
		buf := make([]byte, 12)
		b.Read(buf)
		reply := make([]byte, 20)
		binary.NativeEndian.PutUint32(reply[0:], uint32(vhostuser.ReqGetQueueNum)) // not GET_FEATURES
		binary.NativeEndian.PutUint32(reply[4:], uint32(vhostuser.Version1|vhostuser.FlagReply))
		binary.NativeEndian.PutUint32(reply[8:], 8)
		b.Write(reply)
	}()
	if _, err := ub.GetFeatures(); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("GetFeatures with a mismatched reply: %v", err)
	}
	select {
	case <-ub.Disconnected():
	case <-time.After(time.Second):
		t.Fatal("Disconnected not closed after the protocol failure")
	}
}

// TestUserServerConnect: the server connector accepts a peer, gives up
// when its context ends, and accepts again afterwards.
func TestUserServerConnect(t *testing.T) {
	defer testutil.CheckFDLeaks(t)()
	sock := filepath.Join(t.TempDir(), "s.sock")
	s, err := ListenUser(sock, vhostuser.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	if _, err := s.Connect(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect with nobody: %v", err)
	}
	cancel()
	go func() {
		if c, err := net.Dial("unix", sock); err == nil {
			time.Sleep(50 * time.Millisecond)
			c.Close()
		}
	}()
	b, err := s.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	<-b.(Watcher).Disconnected()
	b.Close()
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}
