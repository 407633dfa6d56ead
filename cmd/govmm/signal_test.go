package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testutil"
)

// TestInterruptWhileWaitingForBackend: govmm run in vhost-user server
// mode waits for a backend to connect; ^C then must stop it cleanly
// (status 130, its socket removed), not kill it with the socket left
// behind for the next run to trip over.
func TestInterruptWhileWaitingForBackend(t *testing.T) {
	testutil.RequireKVM(t)
	sock := filepath.Join(t.TempDir(), "vu.sock")
	cmd := govmmCommand(t, nil, "run", "--net", "vhost-user="+sock+",server")
	var errOut strings.Builder
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "govmm to listen on the socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("govmm run = %v, want exit status 130; stderr:\n%s", err, errOut.String())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after ^C: %v", err)
	}
}

// TestStaleSocketIsReplaced: a socket file nobody listens on (left by a
// killed process) does not stop the next listener; a live one does.
func TestStaleSocketIsReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vu.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the file stays: a stale socket
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket not left: %v", err)
	}
	// A live listener must not be taken over.
	live, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock + "2", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	code, _, errOut := run("vhost-user-net", "--socket", sock+"2", "--tap", "x")
	if code == 0 || !strings.Contains(errOut, "another process is listening") {
		t.Errorf("vhost-user-net on a live socket = %d, %q", code, errOut)
	}
	testutil.RequireKVM(t)
	cmd := govmmCommand(t, nil, "run", "--net", "vhost-user="+sock+",server")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}()
	testutil.WaitFor(t, 15*time.Second, "govmm to listen on the replaced socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}
