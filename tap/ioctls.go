package tap

import "golang.org/x/sys/unix"

// TUN/TAP ioctl requests and flags (<linux/if_tun.h>). golang.org/x/sys
// has the request numbers; ioctls_test.go checks them against the
// _IOW('T', nr, type) encoding of the kernel header.
const (
	// tunSetIFF creates or attaches to an interface (struct ifreq: name,
	// flags). Needs CAP_NET_ADMIN to create.
	tunSetIFF = unix.TUNSETIFF
	// tunSetOffload sets the offloads the reader accepts (TUN_F_*, passed
	// by value). Device-wide: any attached queue fd.
	tunSetOffload = unix.TUNSETOFFLOAD
	// tunSetVnetHdrSz sets the vnet header size (int, by pointer).
	// Device-wide.
	tunSetVnetHdrSz = unix.TUNSETVNETHDRSZ
	// tunSetQueue attaches or detaches one queue of a multi-queue device
	// (struct ifreq flags IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE).
	tunSetQueue = unix.TUNSETQUEUE

	iffTAP         = unix.IFF_TAP
	iffNoPI        = unix.IFF_NO_PI
	iffVnetHdr     = unix.IFF_VNET_HDR
	iffMultiQueue  = unix.IFF_MULTI_QUEUE
	iffTunExcl     = unix.IFF_TUN_EXCL
	iffAttachQueue = unix.IFF_ATTACH_QUEUE
	iffDetachQueue = unix.IFF_DETACH_QUEUE
)

// TUNSETOFFLOAD flags (TUN_F_*; golang.org/x/sys does not define them).
const (
	tunFCsum   = 0x01
	tunFTSO4   = 0x02
	tunFTSO6   = 0x04
	tunFTSOECN = 0x08
	tunFUFO    = 0x10
)
