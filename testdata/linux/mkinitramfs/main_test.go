package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestScriptsParse(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for name, script := range map[string][]byte{"init.sh": initScript, "udhcpc.sh": udhcpcScript} {
		cmd := exec.Command(sh, "-n")
		cmd.Stdin = bytes.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", name, err, out)
		}
	}
}

func TestInitReportsAsDocumented(t *testing.T) {
	for _, want := range []string{
		`echo "initramfs: ping 10.0.0.1 ok"`,
		`echo "initramfs: ping 10.0.0.1 failed"`,
		`echo "initramfs: cpus=$(grep -c '^processor' /proc/cpuinfo)"`,
		"reboot -f",
	} {
		if !bytes.Contains(initScript, []byte(want)) {
			t.Errorf("init.sh lacks %q", want)
		}
	}
}

func TestCheckStaticRejectsNonELF(t *testing.T) {
	if err := checkStatic([]byte("#!/bin/sh\n")); err == nil {
		t.Fatal("accepted a shell script as busybox")
	}
}

// TestArchiveListing builds the archive around a stand-in busybox and lists
// it with GNU cpio where installed.
func TestArchiveListing(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed")
	}
	var buf bytes.Buffer
	if err := build(&buf, []byte("stand-in busybox")); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := os.WriteFile(archive, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cpio, "-t", "-v", "--quiet", "-F", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -tv: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"crw-------", " dev/console\n",
		"-rwxr-xr-x", " init\n",
		" bin/sh -> busybox\n", " bin/ping -> busybox\n", " bin/reboot -> busybox\n",
		" etc/udhcpc.sh\n", " bin/busybox\n",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("listing lacks %q:\n%s", want, listing)
		}
	}
}
