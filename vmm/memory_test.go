package vmm

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGuestRAMIsSealed: a vhost-user backend gets the memfd read-write;
// it must not be able to shrink (or grow) it under the VMM.
func TestGuestRAMIsSealed(t *testing.T) {
	r, err := newGuestRAM(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd := int(r.File().Fd())
	if err := unix.Ftruncate(fd, 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("ftruncate to 0 = %v, want EPERM (sealed)", err)
	}
	if err := unix.Ftruncate(fd, 64<<20); !errors.Is(err, unix.EPERM) {
		t.Errorf("ftruncate to grow = %v, want EPERM (sealed)", err)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_SEAL == 0 {
		t.Errorf("seals %#x, %v: want the seal set sealed too", seals, err)
	}
	// Writes through the mapping still work.
	r.Low()[0] = 0x5a
}
