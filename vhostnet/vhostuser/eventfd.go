package vhostuser

import (
	"fmt"
	"os"
	"strconv"
)

// eventfdLink is what /proc/self/fd/N reads as for an eventfd.
const eventfdLink = "anon_inode:[eventfd]"

// checkEventFD verifies that a descriptor received from the peer really is
// an eventfd. Anything else (a pipe, a socket, a blocking file) could stall
// or confuse the data path that later reads or writes it.
func checkEventFD(f *os.File) error {
	fd, err := fileFD(f)
	if err != nil {
		return fmt.Errorf("check eventfd: %w", err)
	}
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return fmt.Errorf("check eventfd: %w", err)
	}
	if target != eventfdLink {
		return fmt.Errorf("check eventfd: descriptor is %q, not an eventfd", target)
	}
	return nil
}
