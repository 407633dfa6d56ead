package kvm

import (
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEventFDFromFileNeverBlocks: a peer's blocking eventfd whose counter
// is saturated must not park Signal (or Drain) forever.
func TestEventFDFromFileNeverBlocks(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // blocking, as a hostile peer may send
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 0xfffffffffffffffe) // the maximum counter value
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatal(err)
	}
	ev, err := EventFDFromFile(os.NewFile(uintptr(fd), "peer-eventfd"))
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	done := make(chan error, 1)
	go func() { done <- ev.Signal() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Signal on a saturated eventfd = %v, want nil (a notification is pending)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Signal blocked on a saturated eventfd")
	}
	if n, err := ev.Drain(); err != nil || n != 0xfffffffffffffffe {
		t.Fatalf("Drain = %#x, %v", n, err)
	}
	if n, err := ev.Drain(); err != nil || n != 0 {
		t.Fatalf("second Drain = %#x, %v; want 0 without blocking", n, err)
	}
}
