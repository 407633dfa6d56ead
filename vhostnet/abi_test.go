package vhostnet

import (
	"testing"
	"unsafe"

	"github.com/govmm/govmm/internal/testutil"
)

// abiTable lists every ioctl number, flag and struct size of the kernel
// vhost-net backend with the C expression <linux/vhost.h> defines it by.
var abiTable = []testutil.ABIValue{
	{C: "VHOST_GET_FEATURES", Got: vhostGetFeatures},
	{C: "VHOST_SET_FEATURES", Got: vhostSetFeatures},
	{C: "VHOST_SET_OWNER", Got: vhostSetOwner},
	{C: "VHOST_RESET_OWNER", Got: vhostResetOwner},
	{C: "VHOST_SET_MEM_TABLE", Got: vhostSetMemTable},
	{C: "VHOST_SET_VRING_NUM", Got: vhostSetVringNum},
	{C: "VHOST_SET_VRING_ADDR", Got: vhostSetVringAddr},
	{C: "VHOST_SET_VRING_BASE", Got: vhostSetVringBase},
	{C: "VHOST_GET_VRING_BASE", Got: vhostGetVringBase},
	{C: "VHOST_SET_VRING_KICK", Got: vhostSetVringKick},
	{C: "VHOST_SET_VRING_CALL", Got: vhostSetVringCall},
	{C: "VHOST_SET_VRING_ERR", Got: vhostSetVringErr},
	{C: "VHOST_NET_SET_BACKEND", Got: vhostNetSetBackend},
	{C: "1ULL << VHOST_F_LOG_ALL", Got: vhostFLogAll},
	{C: "1ULL << VHOST_NET_F_VIRTIO_NET_HDR", Got: vhostNetFVirtioHdr},
	{C: "sizeof(struct vhost_vring_state)", Got: uint64(unsafe.Sizeof(vringState{}))},
	{C: "sizeof(struct vhost_vring_file)", Got: uint64(unsafe.Sizeof(vringFile{}))},
	{C: "sizeof(struct vhost_vring_addr)", Got: uint64(unsafe.Sizeof(vringAddr{}))},
	{C: "offsetof(struct vhost_vring_addr, desc_user_addr)", Got: uint64(unsafe.Offsetof(vringAddr{}.Desc))},
	{C: "offsetof(struct vhost_vring_addr, used_user_addr)", Got: uint64(unsafe.Offsetof(vringAddr{}.Used))},
	{C: "offsetof(struct vhost_vring_addr, avail_user_addr)", Got: uint64(unsafe.Offsetof(vringAddr{}.Avail))},
	{C: "offsetof(struct vhost_vring_addr, log_guest_addr)", Got: uint64(unsafe.Offsetof(vringAddr{}.Log))},
	{C: "sizeof(struct vhost_memory)", Got: sizeofVhostMemory},
	{C: "sizeof(struct vhost_memory_region)", Got: sizeofVhostMemRegion},
	{C: "offsetof(struct vhost_memory, regions)", Got: sizeofVhostMemory},
	{C: "offsetof(struct vhost_memory_region, userspace_addr)", Got: 16},
}

// TestABIAgainstKernelHeaders compiles a C program that prints each
// expression of abiTable from <linux/vhost.h> and compares.
func TestABIAgainstKernelHeaders(t *testing.T) {
	testutil.CheckABI(t, "linux/vhost.h", abiTable)
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
