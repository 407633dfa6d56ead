package main

import (
	"os"
	"os/exec"
	"testing"

	"github.com/govmm/govmm/internal/testutil"
)

// asGovmmEnv makes the test binary behave as the govmm command itself, so
// tests can run govmm as a separate process (in a network namespace, or
// to time its start-up) without building another binary.
const asGovmmEnv = "GOVMM_TEST_AS_GOVMM"

func init() {
	if os.Getenv(asGovmmEnv) == "1" {
		os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
	}
}

// govmmCommand returns a command running `govmm args...`, inside ns when
// ns is not nil.
func govmmCommand(t *testing.T, ns *testutil.NetNS, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Command(self, args...)
	} else {
		cmd = exec.Command(self, args...)
	}
	cmd.Env = append(os.Environ(), asGovmmEnv+"=1")
	return cmd
}
