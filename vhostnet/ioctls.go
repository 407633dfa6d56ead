package vhostnet

// Kernel vhost ioctl request numbers (<linux/vhost.h>, type VHOST_VIRTIO
// 0xAF), built the way <asm-generic/ioctl.h> builds them so that each
// carries its direction and argument size. All of them need an open
// /dev/vhost-net (CONFIG_VHOST_NET); abi_test.go compares every value with
// the kernel header.

const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30

	vhostVirtio = 0xAF

	vIO   = iocNone<<iocDirShift | vhostVirtio<<iocTypeShift
	vIOR  = iocRead<<iocDirShift | vhostVirtio<<iocTypeShift
	vIOW  = iocWrite<<iocDirShift | vhostVirtio<<iocTypeShift
	vIOWR = (iocRead|iocWrite)<<iocDirShift | vhostVirtio<<iocTypeShift
)

// Argument sizes of the ioctls (checked against the C structs).
const (
	sizeofU64             = 8
	sizeofVhostMemory     = 8  // struct vhost_memory without its regions
	sizeofVhostMemRegion  = 32 // struct vhost_memory_region
	sizeofVhostVringState = 8  // struct vhost_vring_state
	sizeofVhostVringAddr  = 40 // struct vhost_vring_addr
	sizeofVhostVringFile  = 8  // struct vhost_vring_file
)

const (
	vhostGetFeatures    = vIOR | sizeofU64<<iocSizeShift | 0x00
	vhostSetFeatures    = vIOW | sizeofU64<<iocSizeShift | 0x00
	vhostSetOwner       = vIO | 0x01
	vhostResetOwner     = vIO | 0x02
	vhostSetMemTable    = vIOW | sizeofVhostMemory<<iocSizeShift | 0x03
	vhostSetVringNum    = vIOW | sizeofVhostVringState<<iocSizeShift | 0x10
	vhostSetVringAddr   = vIOW | sizeofVhostVringAddr<<iocSizeShift | 0x11
	vhostSetVringBase   = vIOW | sizeofVhostVringState<<iocSizeShift | 0x12
	vhostGetVringBase   = vIOWR | sizeofVhostVringState<<iocSizeShift | 0x12
	vhostSetVringKick   = vIOW | sizeofVhostVringFile<<iocSizeShift | 0x20
	vhostSetVringCall   = vIOW | sizeofVhostVringFile<<iocSizeShift | 0x21
	vhostSetVringErr    = vIOW | sizeofVhostVringFile<<iocSizeShift | 0x22
	vhostNetSetBackend  = vIOW | sizeofVhostVringFile<<iocSizeShift | 0x30
	vhostFLogAll        = 1 << 26 // VHOST_F_LOG_ALL
	vhostNetFVirtioHdr  = 1 << 27 // VHOST_NET_F_VIRTIO_NET_HDR
	vhostVringFDUnbind  = -1      // vhost_vring_file.fd that unbinds
	vhostNetQueuesPerFD = 2       // RX (0) and TX (1) on each vhost-net fd
)
