package virtiotest

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/virtio"
)

// SharedMemory is a Memory whose bytes live in a memfd mapped shared, not
// on the Go heap, so that a vhost-user backend can map the very same
// pages (pass File with Buf, offset 0) and KVM can use them as guest RAM.
type SharedMemory struct {
	*Memory
	File *os.File // the memfd
}

// NewSharedMemory creates size bytes of memfd-backed guest memory at GPA
// base (a multiple of 8); name names the memfd. Close releases it.
func NewSharedMemory(name string, base uint64, size int) (_ *SharedMemory, err error) {
	if base%8 != 0 || size <= 0 {
		return nil, fmt.Errorf("virtiotest: memory %#x+%d: need base%%8 == 0 and size > 0", base, size)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := f.Truncate(int64(size)); err != nil {
		return nil, err
	}
	buf, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap guest memory: %w", err)
	}
	gm, err := virtio.NewGuestMemory(virtio.Region{GPA: base, Mem: buf})
	if err != nil {
		unix.Munmap(buf)
		return nil, err
	}
	return &SharedMemory{Memory: &Memory{Guest: gm, Base: base, Buf: buf}, File: f}, nil
}

// Close unmaps the memory and closes the memfd. It is idempotent; nothing
// may touch the memory afterwards.
func (s *SharedMemory) Close() error {
	if s.File == nil {
		return nil
	}
	err := errors.Join(unix.Munmap(s.Buf), s.File.Close())
	s.File = nil
	return err
}
