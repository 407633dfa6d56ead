package vhostnet

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/govmm/govmm/internal/testutil"
)

// abiTable lists every ioctl number, flag and struct size of the kernel
// vhost-net backend with the C expression <linux/vhost.h> defines it by.
var abiTable = []struct {
	c   string
	got uint64
}{
	{"VHOST_GET_FEATURES", vhostGetFeatures},
	{"VHOST_SET_FEATURES", vhostSetFeatures},
	{"VHOST_SET_OWNER", vhostSetOwner},
	{"VHOST_RESET_OWNER", vhostResetOwner},
	{"VHOST_SET_MEM_TABLE", vhostSetMemTable},
	{"VHOST_SET_VRING_NUM", vhostSetVringNum},
	{"VHOST_SET_VRING_ADDR", vhostSetVringAddr},
	{"VHOST_SET_VRING_BASE", vhostSetVringBase},
	{"VHOST_GET_VRING_BASE", vhostGetVringBase},
	{"VHOST_SET_VRING_KICK", vhostSetVringKick},
	{"VHOST_SET_VRING_CALL", vhostSetVringCall},
	{"VHOST_SET_VRING_ERR", vhostSetVringErr},
	{"VHOST_NET_SET_BACKEND", vhostNetSetBackend},
	{"1ULL << VHOST_F_LOG_ALL", vhostFLogAll},
	{"1ULL << VHOST_NET_F_VIRTIO_NET_HDR", vhostNetFVirtioHdr},
	{"sizeof(struct vhost_vring_state)", uint64(unsafe.Sizeof(vringState{}))},
	{"sizeof(struct vhost_vring_file)", uint64(unsafe.Sizeof(vringFile{}))},
	{"sizeof(struct vhost_vring_addr)", uint64(unsafe.Sizeof(vringAddr{}))},
	{"offsetof(struct vhost_vring_addr, desc_user_addr)", uint64(unsafe.Offsetof(vringAddr{}.Desc))},
	{"offsetof(struct vhost_vring_addr, used_user_addr)", uint64(unsafe.Offsetof(vringAddr{}.Used))},
	{"offsetof(struct vhost_vring_addr, avail_user_addr)", uint64(unsafe.Offsetof(vringAddr{}.Avail))},
	{"offsetof(struct vhost_vring_addr, log_guest_addr)", uint64(unsafe.Offsetof(vringAddr{}.Log))},
	{"sizeof(struct vhost_memory)", sizeofVhostMemory},
	{"sizeof(struct vhost_memory_region)", sizeofVhostMemRegion},
	{"offsetof(struct vhost_memory, regions)", sizeofVhostMemory},
	{"offsetof(struct vhost_memory_region, userspace_addr)", 16},
}

// TestABIAgainstKernelHeaders compiles a C program that prints each
// expression of abiTable from <linux/vhost.h> and compares.
func TestABIAgainstKernelHeaders(t *testing.T) {
	cc := testutil.RequireCommand(t, "gcc")
	if _, err := os.Stat("/usr/include/linux/vhost.h"); err != nil {
		t.Skipf("linux/vhost.h not installed: %v", err)
	}
	dir := t.TempDir()
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include <linux/vhost.h>\nint main(void){\n")
	for _, e := range abiTable {
		src.WriteString("printf(\"%llu\\n\", (unsigned long long)(" + e.c + "));\n")
	}
	src.WriteString("return 0;}\n")
	cfile := filepath.Join(dir, "abi.c")
	if err := os.WriteFile(cfile, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "abi")
	if out, err := exec.Command(cc, "-o", bin, cfile).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run abi: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	n := 0
	for ; sc.Scan(); n++ {
		want, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := abiTable[n].got; got != want {
			t.Errorf("%s = %#x, kernel header says %#x", abiTable[n].c, got, want)
		}
	}
	if n != len(abiTable) {
		t.Errorf("C program printed %d values, want %d", n, len(abiTable))
	}
}

// TestKnownValues pins the numbers of the reference documents, so the
// check runs even without a C compiler.
func TestKnownValues(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"VHOST_GET_FEATURES", vhostGetFeatures, 0x8008AF00},
		{"VHOST_SET_FEATURES", vhostSetFeatures, 0x4008AF00},
		{"VHOST_SET_OWNER", vhostSetOwner, 0xAF01},
		{"VHOST_SET_MEM_TABLE", vhostSetMemTable, 0x4008AF03},
		{"VHOST_SET_VRING_ADDR", vhostSetVringAddr, 0x4028AF11},
		{"VHOST_GET_VRING_BASE", vhostGetVringBase, 0xC008AF12},
		{"VHOST_NET_SET_BACKEND", vhostNetSetBackend, 0x4008AF30},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestEncodeVhostMemory(t *testing.T) {
	buf := encodeVhostMemory([]MemoryRegion{{GPA: 0x1000, Size: 0x2000, UserAddr: 0x7f0000000000}, {GPA: 0x100000, Size: 0x10000, UserAddr: 0x7f0000100000}})
	want := []uint64{2, 0x1000, 0x2000, 0x7f0000000000, 0, 0x100000, 0x10000, 0x7f0000100000, 0}
	if len(buf) != len(want) {
		t.Fatalf("len %d, want %d", len(buf), len(want))
	}
	for i := range want {
		if buf[i] != want[i] {
			t.Errorf("word %d = %#x, want %#x", i, buf[i], want[i])
		}
	}
}
