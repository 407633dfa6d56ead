package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// LinuxKernel returns the paths of the project's Linux guest kernel
// (testdata/linux/out/vmlinux and bzImage), building it with make first:
// the build is cached outside the repository, so only the first call on a
// machine takes minutes. Builds from parallel test packages are
// serialised.
func LinuxKernel(t testing.TB) (vmlinux, bzImage string) {
	t.Helper()
	for _, c := range []string{"make", "gcc", "flex", "bison", "bc"} {
		RequireCommand(t, c)
	}
	dir := filepath.Join(RepoRoot(t), "testdata", "linux")
	if err := makeLocked(dir, "kernel"); err != nil {
		t.Fatalf("build the Linux guest kernel: %v", err)
	}
	vmlinux = filepath.Join(dir, "out", "vmlinux")
	bzImage = filepath.Join(dir, "out", "bzImage")
	for _, p := range []string{vmlinux, bzImage} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("Linux guest kernel: %v", err)
		}
	}
	return vmlinux, bzImage
}

// LinuxInitramfs returns testdata/linux/out/initramfs.cpio, building it
// from busybox-static first.
func LinuxInitramfs(t testing.TB) string {
	t.Helper()
	RequireCommand(t, "busybox")
	dir := filepath.Join(RepoRoot(t), "testdata", "linux")
	if err := makeLocked(dir, "initramfs"); err != nil {
		t.Fatalf("build the initramfs: %v", err)
	}
	return filepath.Join(dir, "out", "initramfs.cpio")
}
