package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// RepoRoot returns the directory holding go.mod, found by walking up from
// the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// TinyKernel returns the path of testdata/kernels/bin/NAME.elf, building
// the tiny kernels with make first (make decides whether anything is
// stale). Builds from parallel test packages are serialised with a lock
// file, so no test ever sees a half-written ELF.
func TinyKernel(t testing.TB, name string) string {
	t.Helper()
	RequireCommand(t, "gcc")
	RequireCommand(t, "make")
	dir := filepath.Join(RepoRoot(t), "testdata", "kernels")
	if err := makeLocked(dir); err != nil {
		t.Fatalf("build tiny kernels: %v", err)
	}
	p := filepath.Join(dir, "bin", name+".elf")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("tiny kernel %s: %v", name, err)
	}
	return p
}

// makeLocked runs make in dir (with targets, if any) holding dir's build
// lock, so parallel test packages never build the same thing at once.
func makeLocked(dir string, targets ...string) error {
	lock, err := os.OpenFile(filepath.Join(dir, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	out, err := exec.Command("make", append([]string{"-s", "-C", dir}, targets...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("make -C %s: %v\n%s", dir, err, out)
	}
	return nil
}
