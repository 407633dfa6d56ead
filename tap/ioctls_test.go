package tap

import "testing"

// The request numbers follow <asm-generic/ioctl.h>: _IOW('T', nr, int)
// is 1<<30 | 4<<16 | 'T'<<8 | nr on x86-64.
func TestIoctlNumbers(t *testing.T) {
	iow := func(nr uint) uint { return 1<<30 | 4<<16 | 'T'<<8 | nr }
	for _, tc := range []struct {
		name      string
		got, want uint
	}{
		{"TUNSETIFF", tunSetIFF, iow(202)},
		{"TUNSETOFFLOAD", tunSetOffload, iow(208)},
		{"TUNSETVNETHDRSZ", tunSetVnetHdrSz, iow(216)},
		{"TUNSETQUEUE", tunSetQueue, iow(217)},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	for _, tc := range []struct {
		name      string
		got, want uint
	}{
		{"IFF_TAP", iffTAP, 0x0002},
		{"IFF_NO_PI", iffNoPI, 0x1000},
		{"IFF_VNET_HDR", iffVnetHdr, 0x4000},
		{"IFF_MULTI_QUEUE", iffMultiQueue, 0x0100},
		{"IFF_TUN_EXCL", iffTunExcl, 0x8000},
		{"IFF_ATTACH_QUEUE", iffAttachQueue, 0x0200},
		{"IFF_DETACH_QUEUE", iffDetachQueue, 0x0400},
		{"TUN_F_CSUM", tunFCsum, 0x01},
		{"TUN_F_TSO4", tunFTSO4, 0x02},
		{"TUN_F_TSO6", tunFTSO6, 0x04},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}
