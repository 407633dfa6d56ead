package hostprobe

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Host paths the probe looks at.
const (
	VhostNetPath = "/dev/vhost-net"
	TUNPath      = "/dev/net/tun"
)

// nestedModules returns the KVM modules that provide a nested KVM
// without hardware virtualization extensions visible to the host (names
// under /sys/module).
func nestedModules() []string { return []string{"kvm_pvm"} }

// hostFacts holds what the host's pseudo-files say.
type hostFacts struct {
	vmx, svm     bool
	nestedModule string
}

// readHostFacts reads proc/cpuinfo and sys/module from root (the host's
// "/" in production, a fstest.MapFS in tests). An unreadable cpuinfo
// leaves both CPU flags false.
func readHostFacts(root fs.FS) hostFacts {
	var h hostFacts
	if f, err := root.Open("proc/cpuinfo"); err == nil {
		h.vmx, h.svm = cpuVirtFlags(f)
		f.Close()
	}
	for _, m := range nestedModules() {
		if _, err := fs.Stat(root, "sys/module/"+m); err == nil {
			h.nestedModule = m
			break
		}
	}
	return h
}

// cpuVirtFlags reports whether any "flags" line of /proc/cpuinfo lists vmx
// (Intel VT-x) or svm (AMD-V).
func cpuVirtFlags(r io.Reader) (vmx, svm bool) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1<<20)
	for s.Scan() {
		key, val, ok := strings.Cut(s.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			switch f {
			case "vmx":
				vmx = true
			case "svm":
				svm = true
			}
		}
	}
	return vmx, svm
}

// deviceOpens reports whether the device at path opens read-write; the
// error says why not.
func deviceOpens(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	f.Close()
	return true, nil
}

// why shortens a device-open error for the report.
func why(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// GuessSupervisorEmulated is the cheap form of the probe's decision, made
// at every `govmm run` (the measurement `govmm probe` does takes a tenth
// of a second or more): KVM on a CPU that shows neither vmx nor svm has no
// hardware virtualization to run guest kernel code with, so it emulates it
// (a paging-based nested KVM such as kvm_pvm). why says what was seen.
func GuessSupervisorEmulated() (emulated bool, why string) {
	return guessFromFacts(readHostFacts(os.DirFS("/")))
}

func guessFromFacts(h hostFacts) (bool, string) {
	switch {
	case h.vmx:
		return false, "CPU has vmx"
	case h.svm:
		return false, "CPU has svm"
	case h.nestedModule != "":
		return true, "CPU has neither vmx nor svm; KVM is " + h.nestedModule
	}
	return true, "CPU has neither vmx nor svm"
}
