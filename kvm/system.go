package kvm

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// DevicePath is where KVM lives on Linux.
const DevicePath = "/dev/kvm"

// APIVersion is the only KVM API version there has ever been; anything else
// means the ABI this package mirrors does not apply.
const APIVersion = 12

// System owns an open /dev/kvm.
type System struct {
	mu     sync.Mutex
	f      *os.File
	closed bool
}

// Open opens the KVM device at path (usually DevicePath) and checks the API
// version. A missing device or a permission problem is reported in terms a
// user can act on.
func Open(path string) (*System, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("open %s: no KVM device (is the kvm module loaded and virtualization enabled?): %w", path, err)
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("open %s: permission denied (run as root or join the kvm group): %w", path, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &System{f: f}
	v, err := s.APIVersion()
	if err != nil {
		f.Close()
		return nil, err
	}
	if v != APIVersion {
		f.Close()
		return nil, fmt.Errorf("%s: KVM API version %d, want %d", path, v, APIVersion)
	}
	return s, nil
}

func (s *System) fd() int { return int(s.f.Fd()) }

// APIVersion returns KVM_GET_API_VERSION.
func (s *System) APIVersion() (int, error) {
	r, err := ioctl(s.fd(), "KVM_GET_API_VERSION", kvmGetAPIVersion, 0)
	return int(r), err
}

// CheckExtension returns KVM_CHECK_EXTENSION for c: 0 when unsupported,
// otherwise 1 or a capability-specific value (a count, a limit).
func (s *System) CheckExtension(c Cap) (int, error) {
	r, err := ioctl(s.fd(), "KVM_CHECK_EXTENSION "+c.String(), kvmCheckExtension, uintptr(c))
	return int(r), err
}

// MissingCaps returns the capabilities from RequiredCaps that this KVM lacks.
func (s *System) MissingCaps() ([]Cap, error) {
	var missing []Cap
	for _, c := range RequiredCaps() {
		v, err := s.CheckExtension(c)
		if err != nil {
			return nil, err
		}
		if v == 0 {
			missing = append(missing, c)
		}
	}
	return missing, nil
}

// VCPUMmapSize returns the size of each vCPU's kvm_run mapping.
func (s *System) VCPUMmapSize() (int, error) {
	r, err := ioctl(s.fd(), "KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0)
	return int(r), err
}

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID: every leaf KVM can
// present to a guest, with the feature bits it can virtualize.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	for n := 256; n <= 4096; n *= 2 {
		buf := cpuidToBytes(make([]CPUIDEntry, n))
		_, err := ioctlBuf(s.fd(), "KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, buf)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return cpuidFromBytes(buf), nil
	}
	return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: more than 4096 entries")
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST.
func (s *System) MSRIndexList() ([]uint32, error) {
	for n := 256; n <= 16384; n *= 2 {
		buf := make([]byte, 4+4*n)
		buf[0], buf[1], buf[2], buf[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		_, err := ioctlBuf(s.fd(), "KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList, buf)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return msrIndexList(buf), nil
	}
	return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: too many MSRs")
}

// CreateVM creates a new VM.
func (s *System) CreateVM() (*VM, error) {
	mmapSize, err := s.VCPUMmapSize()
	if err != nil {
		return nil, err
	}
	// KVM_CREATE_VM can fail with EINTR under signal load; ioctl() retries.
	fd, err := ioctl(s.fd(), "KVM_CREATE_VM", kvmCreateVM, 0)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(int(fd))
	return &VM{f: os.NewFile(fd, "kvm-vm"), mmapSize: mmapSize}, nil
}

// Close releases /dev/kvm. It is idempotent.
func (s *System) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.f.Close()
}
