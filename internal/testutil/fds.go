package testutil

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"
)

// OpenFDs lists this process's open descriptors with what they point at.
func OpenFDs() (map[string]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // closed while we listed
		}
		out[e.Name()] = target
	}
	return out, nil
}

// CheckFDLeaks snapshots the open descriptors and returns a function that
// fails t if, when it is called, descriptors are open that were not open
// before. It retries briefly: closing an *os.File may be finished by a
// finalizer or a goroutine that is just returning.
func CheckFDLeaks(t testing.TB) func() {
	t.Helper()
	before, err := OpenFDs()
	if err != nil {
		t.Fatalf("list fds: %v", err)
	}
	return func() {
		t.Helper()
		var leaked []string
		for try := 0; try < 50; try++ {
			after, err := OpenFDs()
			if err != nil {
				t.Fatalf("list fds: %v", err)
			}
			leaked = leaked[:0]
			for fd, target := range after {
				if _, ok := before[fd]; !ok {
					leaked = append(leaked, fmt.Sprintf("%s -> %s", fd, target))
				}
			}
			if len(leaked) == 0 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		sort.Strings(leaked)
		t.Errorf("%d file descriptors leaked:\n  %s", len(leaked), strings.Join(leaked, "\n  "))
	}
}
