package vmm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/boot"
	"github.com/govmm/govmm/virtio"
)

// GuestRAM is the guest's memory: one memfd mapped once, split into the
// guest-physical regions of boot.RAMRegions. A memfd (not anonymous
// memory) so that a vhost-user backend can map the very same pages.
type GuestRAM struct {
	file    *os.File
	mapping []byte
	regions []RAMRegion
}

// RAMRegion is one contiguous guest-physical range and its host mapping.
// Offset is its offset in the memfd (needed by vhost-user SET_MEM_TABLE).
type RAMRegion struct {
	GPA    uint64
	Offset uint64
	Mem    []byte
}

func newGuestRAM(size uint64) (*GuestRAM, error) {
	fd, err := unix.MemfdCreate("govmm-guest-ram", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create guest RAM: %w", err)
	}
	f := os.NewFile(uintptr(fd), "govmm-guest-ram")
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("size guest RAM to %d bytes: %w", size, err)
	}
	// Guest RAM is shared with vhost-user backends. Sealing its size means
	// no peer can truncate it under us: a shrunk memfd would turn every
	// touch of guest memory (vCPUs, devices) into SIGBUS.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal guest RAM: %w", err)
	}
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mmap %d bytes of guest RAM: %w", size, err)
	}
	r := &GuestRAM{file: f, mapping: m}
	var off uint64
	for _, reg := range boot.RAMRegions(size) {
		r.regions = append(r.regions, RAMRegion{GPA: reg.GPA, Offset: off, Mem: m[off : off+reg.Size : off+reg.Size]})
		off += reg.Size
	}
	return r, nil
}

// Regions returns the guest-physical regions, lowest first.
func (r *GuestRAM) Regions() []RAMRegion { return r.regions }

// virtioMemory describes guest RAM to the virtio layer.
func (r *GuestRAM) virtioMemory() (*virtio.GuestMemory, error) {
	var regions []virtio.Region
	for _, rr := range r.regions {
		regions = append(regions, virtio.Region{GPA: rr.GPA, Mem: rr.Mem})
	}
	mem, err := virtio.NewGuestMemory(regions...)
	if err != nil {
		return nil, fmt.Errorf("guest memory for virtio: %w", err)
	}
	return mem, nil
}

// Low returns the host mapping of the region at GPA 0 (where the kernel,
// boot parameters and tables go).
func (r *GuestRAM) Low() []byte { return r.regions[0].Mem }

// File returns the memfd backing guest RAM (for vhost-user SET_MEM_TABLE).
// The GuestRAM keeps ownership.
func (r *GuestRAM) File() *os.File { return r.file }

// Close unmaps guest RAM and closes the memfd. It is idempotent.
func (r *GuestRAM) Close() error {
	var first error
	if r.mapping != nil {
		if err := unix.Munmap(r.mapping); err != nil {
			first = fmt.Errorf("munmap guest RAM: %w", err)
		}
		r.mapping = nil
		r.regions = nil
	}
	if r.file != nil {
		if err := r.file.Close(); err != nil && first == nil {
			first = err
		}
		r.file = nil
	}
	return first
}
