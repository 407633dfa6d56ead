package vhostuser

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// MaxMemorySlots bounds the regions one MemoryMap holds (SET_MEM_TABLE is
// limited to 8; ADD_MEM_REG can go further).
const MaxMemorySlots = 512

// ErrNoMemory: an address range is not inside one mapped region.
var ErrNoMemory = errors.New("vhost-user: address not in guest memory")

// MemoryMap is a back-end's view of guest memory: each region's file
// mapped MAP_SHARED from file offset 0 for MmapOffset+Size bytes (the
// layout libvhost-user uses, which sidesteps the alignment rules of the
// mmap offset argument), with guest-physical and front-end user addresses
// translated to host bytes under bounds checks.
//
// Slices into guest memory are handed out only through a [MemoryView],
// which holds a read lock: SetTable, Add, Remove and Close wait until
// every view is released before unmapping, so a front-end that replaces
// the memory table while queues run cannot make the back-end touch an
// unmapped page. Do not block on anything the control path provides while
// holding a view.
//
// The file sizes are checked when mapping, but a front-end could still
// truncate a file afterwards, making accesses fault (SIGBUS). The copy
// helpers ReadGuest and WriteGuest turn such a fault into an error; code
// using view slices directly should do the same (debug.SetPanicOnFault).
type MemoryMap struct {
	mu      sync.RWMutex
	regions []mapping // sorted by GuestPhysAddr
	closed  bool
}

type mapping struct {
	MemoryRegion
	mem []byte // whole mapping: MmapOffset+Size bytes from file offset 0
}

func (m *mapping) data() []byte { return m.mem[m.MmapOffset:] }

// NewMemoryMap returns an empty map.
func NewMemoryMap() *MemoryMap { return &MemoryMap{} }

// SetTable replaces every region (SET_MEM_TABLE). files[i] backs
// regions[i]; they are only used during the call. On error the previous
// table stays in place.
func (m *MemoryMap) SetTable(regions []MemoryRegion, files []*os.File) error {
	if len(regions) != len(files) {
		return fmt.Errorf("vhost-user: set memory table: %d regions but %d files", len(regions), len(files))
	}
	if len(regions) > MaxMemorySlots {
		return fmt.Errorf("vhost-user: set memory table: %d regions, at most %d", len(regions), MaxMemorySlots)
	}
	if err := checkOverlaps(regions); err != nil {
		return fmt.Errorf("vhost-user: set memory table: %w", err)
	}
	maps := make([]mapping, 0, len(regions))
	for i, r := range regions {
		mp, err := mapRegion(r, files[i])
		if err != nil {
			unmapAll(maps)
			return fmt.Errorf("vhost-user: set memory table: region %d: %w", i, err)
		}
		maps = append(maps, mp)
	}
	sortMappings(maps)

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		unmapAll(maps)
		return fmt.Errorf("vhost-user: set memory table: %w", ErrClosed)
	}
	old := m.regions
	m.regions = maps
	m.mu.Unlock()
	return unmapAll(old)
}

// Add maps one more region (ADD_MEM_REG). file is only used during the call.
func (m *MemoryMap) Add(r MemoryRegion, file *os.File) error {
	mp, err := mapRegion(r, file)
	if err != nil {
		return fmt.Errorf("vhost-user: add memory region %v: %w", r, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) error {
		unmapAll([]mapping{mp})
		return fmt.Errorf("vhost-user: add memory region %v: %w", r, err)
	}
	if m.closed {
		return fail(ErrClosed)
	}
	if len(m.regions) >= MaxMemorySlots {
		return fail(fmt.Errorf("already %d regions", len(m.regions)))
	}
	all := make([]MemoryRegion, 0, len(m.regions)+1)
	for _, x := range m.regions {
		all = append(all, x.MemoryRegion)
	}
	if err := checkOverlaps(append(all, r)); err != nil {
		return fail(err)
	}
	m.regions = append(m.regions, mp)
	sortMappings(m.regions)
	return nil
}

// Remove unmaps the region with r's guest address, user address and size
// (REM_MEM_REG; MmapOffset is ignored).
func (m *MemoryMap) Remove(r MemoryRegion) error {
	m.mu.Lock()
	i := slices.IndexFunc(m.regions, func(x mapping) bool {
		return x.GuestPhysAddr == r.GuestPhysAddr && x.UserAddr == r.UserAddr && x.Size == r.Size
	})
	if i < 0 {
		m.mu.Unlock()
		return fmt.Errorf("vhost-user: remove memory region %v: %w", r, ErrNoMemory)
	}
	gone := m.regions[i]
	m.regions = slices.Delete(m.regions, i, i+1)
	m.mu.Unlock()
	return unmapAll([]mapping{gone})
}

// Regions returns the mapped regions, sorted by guest address.
func (m *MemoryMap) Regions() []MemoryRegion {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]MemoryRegion, len(m.regions))
	for i, x := range m.regions {
		out[i] = x.MemoryRegion
	}
	return out
}

// Close unmaps everything, once every view is released. It is idempotent;
// later SetTable/Add fail and views see no memory.
func (m *MemoryMap) Close() error {
	m.mu.Lock()
	old := m.regions
	m.regions, m.closed = nil, true
	m.mu.Unlock()
	return unmapAll(old)
}

// Acquire returns a view for translating addresses. Slices obtained from
// it stay valid until Release. Release every view promptly: table updates
// wait for it.
func (m *MemoryMap) Acquire() *MemoryView {
	m.mu.RLock()
	return &MemoryView{m: m}
}

// MemoryView is a read-locked snapshot of a MemoryMap.
type MemoryView struct {
	m *MemoryMap
}

// Release ends the view; its slices must no longer be used. Calling it
// twice is harmless.
func (v *MemoryView) Release() {
	if v.m != nil {
		v.m.mu.RUnlock()
		v.m = nil
	}
}

// GuestSlice returns the n bytes at guest-physical address gpa. The range
// must lie within one region.
func (v *MemoryView) GuestSlice(gpa, n uint64) ([]byte, error) {
	if v.m == nil {
		return nil, errors.New("vhost-user: memory view used after Release")
	}
	return guestSlice(v.m.regions, gpa, n)
}

// UserSlice returns the n bytes at front-end user address uva (the
// addresses of SET_VRING_ADDR). The range must lie within one region.
func (v *MemoryView) UserSlice(uva, n uint64) ([]byte, error) {
	if v.m == nil {
		return nil, errors.New("vhost-user: memory view used after Release")
	}
	for i := range v.m.regions {
		r := &v.m.regions[i]
		if uva >= r.UserAddr && uva-r.UserAddr < r.Size {
			return sliceIn(r, uva-r.UserAddr, n, "user", uva)
		}
	}
	return nil, fmt.Errorf("user address %#x: %w", uva, ErrNoMemory)
}

// UserToGuest translates a front-end user address to a guest-physical one.
func (v *MemoryView) UserToGuest(uva uint64) (uint64, error) {
	if v.m == nil {
		return 0, errors.New("vhost-user: memory view used after Release")
	}
	for _, r := range v.m.regions {
		if uva >= r.UserAddr && uva-r.UserAddr < r.Size {
			return r.GuestPhysAddr + (uva - r.UserAddr), nil
		}
	}
	return 0, fmt.Errorf("user address %#x: %w", uva, ErrNoMemory)
}

func guestSlice(regions []mapping, gpa, n uint64) ([]byte, error) {
	// Last region starting at or below gpa.
	i, _ := slices.BinarySearchFunc(regions, gpa, func(x mapping, a uint64) int {
		switch {
		case x.GuestPhysAddr < a:
			return -1
		case x.GuestPhysAddr > a:
			return 1
		}
		return 0
	})
	if i < len(regions) && regions[i].GuestPhysAddr == gpa {
		return sliceIn(&regions[i], 0, n, "guest", gpa)
	}
	if i > 0 {
		r := &regions[i-1]
		if gpa-r.GuestPhysAddr < r.Size {
			return sliceIn(r, gpa-r.GuestPhysAddr, n, "guest", gpa)
		}
	}
	return nil, fmt.Errorf("guest address %#x: %w", gpa, ErrNoMemory)
}

// sliceIn returns n bytes at offset off of region r, or an error naming
// the address when the range leaves the region.
func sliceIn(r *mapping, off, n uint64, space string, addr uint64) ([]byte, error) {
	if n > r.Size-off {
		return nil, fmt.Errorf("%s range %#x+%#x crosses the end of region %v: %w", space, addr, n, r.MemoryRegion, ErrNoMemory)
	}
	d := r.data()
	return d[off : off+n : off+n], nil
}

// ReadGuest copies len(p) bytes from guest-physical address gpa.
func (m *MemoryMap) ReadGuest(gpa uint64, p []byte) error {
	return m.copyGuest(gpa, p, false)
}

// WriteGuest copies p to guest-physical address gpa.
func (m *MemoryMap) WriteGuest(gpa uint64, p []byte) error {
	return m.copyGuest(gpa, p, true)
}

func (m *MemoryMap) copyGuest(gpa uint64, p []byte, write bool) (err error) {
	v := m.Acquire()
	defer v.Release()
	s, err := v.GuestSlice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("vhost-user: guest memory at %#x faulted (file truncated?): %v", gpa, r)
		}
	}()
	if write {
		copy(s, p)
	} else {
		copy(p, s)
	}
	return nil
}

// checkOverlaps validates each region and rejects overlapping guest or
// user ranges, which would make translation ambiguous.
func checkOverlaps(regions []MemoryRegion) error {
	for i, a := range regions {
		if err := a.validate(); err != nil {
			return err
		}
		for _, b := range regions[:i] {
			if a.GuestPhysAddr < b.GuestPhysAddr+b.Size && b.GuestPhysAddr < a.GuestPhysAddr+a.Size {
				return fmt.Errorf("regions %v and %v overlap in guest memory", b, a)
			}
			if a.UserAddr < b.UserAddr+b.Size && b.UserAddr < a.UserAddr+a.Size {
				return fmt.Errorf("regions %v and %v overlap in user addresses", b, a)
			}
		}
	}
	return nil
}

// mapRegion maps r's file. The file must be a regular file (memfd,
// hugetlbfs, tmpfs) at least MmapOffset+Size bytes long, so that no access
// inside the region can fault at the time of mapping.
func mapRegion(r MemoryRegion, f *os.File) (mapping, error) {
	if err := r.validate(); err != nil {
		return mapping{}, err
	}
	length := r.MmapOffset + r.Size // no overflow: validate checked
	if length > math.MaxInt {
		return mapping{}, fmt.Errorf("mapping length %#x too large", length)
	}
	fd, err := fileFD(f)
	if err != nil {
		return mapping{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return mapping{}, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return mapping{}, fmt.Errorf("backing descriptor is not a regular file (mode %#o)", st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) < length {
		return mapping{}, fmt.Errorf("backing file has %d bytes, region needs %d", st.Size, length)
	}
	mem, err := unix.Mmap(fd, 0, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		return mapping{}, fmt.Errorf("mmap %d bytes: %w", length, err)
	}
	return mapping{MemoryRegion: r, mem: mem}, nil
}

func unmapAll(maps []mapping) error {
	var errs []error
	for _, mp := range maps {
		if err := unix.Munmap(mp.mem); err != nil {
			errs = append(errs, fmt.Errorf("munmap region %v: %w", mp.MemoryRegion, err))
		}
	}
	return errors.Join(errs...)
}

func sortMappings(maps []mapping) {
	slices.SortFunc(maps, func(a, b mapping) int {
		switch {
		case a.GuestPhysAddr < b.GuestPhysAddr:
			return -1
		case a.GuestPhysAddr > b.GuestPhysAddr:
			return 1
		}
		return 0
	})
}
