package virtio

import "encoding/binary"

// Control queue classes and commands (struct virtio_net_ctrl_hdr: class,
// command, then command-specific data, all device-readable, then one
// device-writable ack byte).
const (
	NetCtrlRX         = 0
	NetCtrlRXPromisc  = 0 // u8 on
	NetCtrlRXAllMulti = 1
	NetCtrlRXAllUni   = 2 // VIRTIO_NET_F_CTRL_RX_EXTRA
	NetCtrlRXNoMulti  = 3
	NetCtrlRXNoUni    = 4
	NetCtrlRXNoBcast  = 5

	NetCtrlMAC         = 1
	NetCtrlMACTableSet = 0 // two struct virtio_net_ctrl_mac: le32 entries, entries*6 bytes
	NetCtrlMACAddrSet  = 1 // 6 bytes; VIRTIO_NET_F_CTRL_MAC_ADDR

	NetCtrlVLAN     = 2
	NetCtrlAnnounce = 3

	NetCtrlMQ          = 4
	NetCtrlMQPairsSet  = 0 // le16 virtqueue_pairs
	NetCtrlMQRSSConfig = 1
	NetCtrlMQHashCfg   = 2

	NetCtrlGuestOffloads = 5

	// NetCtrlOK and NetCtrlErr are the ack values.
	NetCtrlOK  = 0
	NetCtrlErr = 1

	// NetMACTableEntries is how many unicast and how many multicast
	// addresses the receive filter keeps; a longer list is accepted and
	// treated as "all unicast" / "all multicast" for its kind.
	NetMACTableEntries = 64
	// netCtrlMaxLen bounds the device-readable part of a control
	// command; longer ones are refused.
	netCtrlMaxLen = 4 + 6*1024 + 4 + 6*1024 + 2
)

// netRxFilter is the receive filter the control queue programs. It is
// immutable once published: a command builds a new one.
type netRxFilter struct {
	promisc, allMulti, allUni, noMulti, noUni, noBcast bool
	mac                                                [6]byte
	uni, multi                                         [][6]byte
	uniOverflow, multiOverflow                         bool
}

// defaultRxFilter is the state after a device reset: promiscuous, so a
// driver that never negotiates CTRL_RX receives everything.
func defaultRxFilter(mac [6]byte) *netRxFilter {
	return &netRxFilter{promisc: true, mac: mac}
}

// accept decides on a frame by its destination address.
func (f *netRxFilter) accept(frame []byte) bool {
	if f.promisc {
		return true
	}
	if len(frame) < 6 {
		return false
	}
	var dst [6]byte
	copy(dst[:], frame)
	switch {
	case dst == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}:
		return !f.noBcast
	case dst[0]&1 != 0:
		if f.noMulti {
			return false
		}
		return f.allMulti || f.multiOverflow || containsMAC(f.multi, dst)
	default:
		if f.noUni {
			return false
		}
		return f.allUni || f.uniOverflow || dst == f.mac || containsMAC(f.uni, dst)
	}
}

func containsMAC(list [][6]byte, m [6]byte) bool {
	for _, e := range list {
		if e == m {
			return true
		}
	}
	return false
}

// netCtrlEnv is what a control command is judged against.
type netCtrlEnv struct {
	features   uint64
	maxPairs   int // max_virtqueue_pairs
	readyPairs int // pairs 0..readyPairs-1 have both queues ready
}

// netCtrlResult is the decision on one command: the ack, and what to
// change if it is NetCtrlOK.
type netCtrlResult struct {
	ack    uint8
	pairs  int          // > 0: make this many pairs active
	filter *netRxFilter // non-nil: the new receive filter
	macSet bool         // filter.mac is a new MAC (MAC_ADDR_SET)
}

var netCtrlRefused = netCtrlResult{ack: NetCtrlErr}

// decideNetCtrl parses one control command (the device-readable bytes of
// the chain: class, command, data) and decides on it. It never changes
// anything itself, so it can be fuzzed: every input gets an answer, and
// anything malformed, unknown or not negotiated is NetCtrlErr.
func decideNetCtrl(env netCtrlEnv, cur *netRxFilter, cmd []byte) netCtrlResult {
	if len(cmd) < 2 || len(cmd) > netCtrlMaxLen {
		return netCtrlRefused
	}
	class, command, data := cmd[0], cmd[1], cmd[2:]
	has := func(f uint64) bool { return env.features&f == f }
	switch class {
	case NetCtrlRX:
		if !has(NetFCtrlRX) || len(data) != 1 || command > NetCtrlRXNoBcast {
			return netCtrlRefused
		}
		if command >= NetCtrlRXAllUni && !has(NetFCtrlRXExtra) {
			return netCtrlRefused
		}
		f := *cur
		on := data[0] != 0
		switch command {
		case NetCtrlRXPromisc:
			f.promisc = on
		case NetCtrlRXAllMulti:
			f.allMulti = on
		case NetCtrlRXAllUni:
			f.allUni = on
		case NetCtrlRXNoMulti:
			f.noMulti = on
		case NetCtrlRXNoUni:
			f.noUni = on
		case NetCtrlRXNoBcast:
			f.noBcast = on
		}
		return netCtrlResult{ack: NetCtrlOK, filter: &f}

	case NetCtrlMAC:
		switch command {
		case NetCtrlMACTableSet:
			if !has(NetFCtrlRX) {
				return netCtrlRefused
			}
			uni, rest, ok := parseMACList(data)
			if !ok {
				return netCtrlRefused
			}
			multi, rest, ok := parseMACList(rest)
			if !ok || len(rest) != 0 {
				return netCtrlRefused
			}
			f := *cur
			f.uni, f.uniOverflow = capMACs(uni)
			f.multi, f.multiOverflow = capMACs(multi)
			return netCtrlResult{ack: NetCtrlOK, filter: &f}
		case NetCtrlMACAddrSet:
			if !has(NetFCtrlMACAddr) || len(data) != 6 {
				return netCtrlRefused
			}
			f := *cur
			copy(f.mac[:], data)
			return netCtrlResult{ack: NetCtrlOK, filter: &f, macSet: true}
		}
		return netCtrlRefused

	case NetCtrlMQ:
		if command != NetCtrlMQPairsSet || !has(NetFMQ) || len(data) != 2 {
			return netCtrlRefused
		}
		n := int(binary.LittleEndian.Uint16(data))
		if n < 1 || n > env.maxPairs || n > env.readyPairs {
			return netCtrlRefused
		}
		return netCtrlResult{ack: NetCtrlOK, pairs: n}
	}
	// VLAN filtering, announcements, guest offloads: not offered.
	return netCtrlRefused
}

// parseMACList splits one struct virtio_net_ctrl_mac off b.
func parseMACList(b []byte) (macs []byte, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if n > uint64(len(b)-4)/6 {
		return nil, nil, false
	}
	end := 4 + 6*int(n)
	return b[4:end], b[end:], true
}

// capMACs keeps up to NetMACTableEntries addresses (a copy: the input
// aliases the command buffer) and reports an overflow.
func capMACs(b []byte) ([][6]byte, bool) {
	n := len(b) / 6
	if n > NetMACTableEntries {
		return nil, true
	}
	out := make([][6]byte, 0, n)
	for i := 0; i < n; i++ {
		var m [6]byte
		copy(m[:], b[6*i:])
		if !containsMAC(out, m) {
			out = append(out, m)
		}
	}
	return out, false
}
