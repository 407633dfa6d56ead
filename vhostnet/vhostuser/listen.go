package vhostuser

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// ListenUnix listens on the Unix socket path for the other side of a
// vhost-user connection. A socket file nobody listens on any more (left by
// a process that was killed) is replaced; one somebody does listen on is
// an error. The file is removed when the listener closes.
func ListenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("vhost-user: listen on %s: another process is listening there", path)
		}
		if errors.Is(derr, syscall.ECONNREFUSED) {
			os.Remove(path)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vhost-user: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}
