// Command mkinitramfs writes the uncompressed initramfs used by govmm's Linux
// boot tests: a statically linked busybox, the applet links its /init script
// needs, and that script, which pings the host at 10.0.0.1, prints one
// result line and the CPU count on the console, then reboots.
//
// Usage:
//
//	go run ./testdata/linux/mkinitramfs -o out.cpio -busybox PATH
//
// PATH must be a statically linked busybox (Debian: busybox-static): the
// initramfs holds no shared libraries.
package main

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/govmm/govmm/boot/initramfs"
)

//go:embed init.sh
var initScript []byte

//go:embed udhcpc.sh
var udhcpcScript []byte

func main() {
	out := flag.String("o", "", "output file (required)")
	busybox := flag.String("busybox", "", "statically linked busybox binary (required)")
	flag.Parse()
	if *out == "" || *busybox == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, *busybox); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
}

func run(out, busyboxPath string) error {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	if err := checkStatic(bb); err != nil {
		return fmt.Errorf("busybox %s: %w", busyboxPath, err)
	}
	var buf bytes.Buffer
	if err := build(&buf, bb); err != nil {
		return err
	}
	// Write next to the target and rename, so a failed run never leaves a
	// truncated archive behind.
	tmp, err := os.CreateTemp(filepath.Dir(out), ".initramfs-*")
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("chmod output: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("rename output: %w", err)
	}
	return nil
}

// checkStatic refuses a dynamically linked binary, which could not run in
// an initramfs without its loader and libraries.
func checkStatic(bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("not an x86-64 binary (%v %v)", f.Class, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked; install a static busybox (Debian: busybox-static)")
		}
	}
	return nil
}

// build writes the archive: directories first, since the kernel does not
// create parents, then the console node the kernel opens before /init.
func build(w io.Writer, busybox []byte) error {
	a := initramfs.NewWriter(w)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "root"} {
		perm := fs.FileMode(0o755)
		if d == "tmp" {
			perm = 0o777 | fs.ModeSticky
		}
		if err := a.Mkdir(d, perm); err != nil {
			return err
		}
	}
	if err := a.Mknod("dev/console", fs.ModeDevice|fs.ModeCharDevice|0o600, 5, 1); err != nil {
		return err
	}
	if err := a.Mknod("dev/null", fs.ModeDevice|fs.ModeCharDevice|0o666, 1, 3); err != nil {
		return err
	}
	if err := a.WriteFile("bin/busybox", 0o755, busybox); err != nil {
		return err
	}
	// The busybox commands /init and its helper script run, plus a few for
	// poking around on a console.
	applets := []string{
		"sh", "mount", "ip", "ifconfig", "udhcpc", "ping", "grep", "cat",
		"echo", "ls", "mkdir", "sleep", "dmesg", "reboot", "poweroff",
	}
	for _, name := range applets {
		if err := a.Symlink("bin/"+name, "busybox"); err != nil {
			return err
		}
	}
	if err := a.WriteFile("etc/udhcpc.sh", 0o755, udhcpcScript); err != nil {
		return err
	}
	if err := a.WriteFile("init", 0o755, initScript); err != nil {
		return err
	}
	return a.Close()
}
