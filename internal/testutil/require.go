package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// skipOrFail skips t naming the missing requirement, unless the
// environment variable env is "1", in which case the absence is a failure:
// CI sets GOVMM_REQUIRE_KVM=1 so a skipped kernel test cannot hide a
// broken host or a broken helper.
func skipOrFail(t testing.TB, env, requirement, why string) {
	t.Helper()
	if os.Getenv(env) == "1" {
		t.Fatalf("requirement %q not met (%s) and %s=1", requirement, why, env)
	}
	t.Skipf("requirement %q not met: %s (set %s=1 to make this a failure)", requirement, why, env)
}

// RequireKVM skips unless /dev/kvm can be opened read-write.
func RequireKVM(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		skipOrFail(t, "GOVMM_REQUIRE_KVM", "kvm", err.Error())
		return
	}
	f.Close()
}

// RequireRoot skips unless the test runs as root (TAP devices, network
// namespaces). It is governed by GOVMM_REQUIRE_KVM too: CI runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "GOVMM_REQUIRE_KVM", "root", "not running as root")
	}
}

// RequireTUN skips unless /dev/net/tun can be opened (and we are root).
func RequireTUN(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		skipOrFail(t, "GOVMM_REQUIRE_KVM", "tun", err.Error())
		return
	}
	f.Close()
}

// RequireVhostNet skips unless /dev/vhost-net exists and opens; it fails
// instead when GOVMM_REQUIRE_VHOST_NET=1.
func RequireVhostNet(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/vhost-net", os.O_RDWR, 0)
	if err != nil {
		skipOrFail(t, "GOVMM_REQUIRE_VHOST_NET", "vhost-net", err.Error())
		return
	}
	f.Close()
}

// RequireCommand skips unless name is on PATH (gcc for the tiny kernels,
// qemu-system-x86_64 for the interoperability tests, ...).
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "GOVMM_REQUIRE_KVM", "command "+name, err.Error())
		return ""
	}
	return p
}

// RequireNativeSupervisor skips unless this host's KVM runs guest kernel
// code natively (hardware virtualization): only then can a Linux guest's
// user space run. It fails instead when GOVMM_REQUIRE_FULL_BOOT=1.
func RequireNativeSupervisor(t testing.TB) {
	t.Helper()
	RequireKVM(t)
	// The same cheap test `govmm run --host-quirks auto` makes (package
	// vmm/hostprobe, which this package cannot import: kvm's own tests use
	// it): without vmx or svm, KVM emulates guest kernel code.
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		skipOrFail(t, "GOVMM_REQUIRE_FULL_BOOT", "native guest kernel execution", err.Error())
		return
	}
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				return
			}
		}
	}
	skipOrFail(t, "GOVMM_REQUIRE_FULL_BOOT", "native guest kernel execution",
		"the CPU shows neither vmx nor svm, so this KVM emulates guest kernel code and guest user space cannot run (see govmm probe)")
}
