package virtio

import (
	"encoding/binary"
	"testing"
)

var ctrlMAC = [6]byte{0x02, 0x47, 0x56, 0, 0, 1}

func macTable(uni, multi [][6]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(uni)))
	for _, m := range uni {
		b = append(b, m[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(multi)))
	for _, m := range multi {
		b = append(b, m[:]...)
	}
	return b
}

func cmd(class, command byte, data ...byte) []byte { return append([]byte{class, command}, data...) }

func TestDecideNetCtrl(t *testing.T) {
	all := NetFCtrlVQ | NetFCtrlRX | NetFCtrlRXExtra | NetFCtrlMACAddr | NetFMQ
	env := netCtrlEnv{features: all, maxPairs: 4, readyPairs: 3}
	cur := defaultRxFilter(ctrlMAC)
	uni := [6]byte{0x02, 9, 9, 9, 9, 9}
	mc := [6]byte{0x01, 0, 0x5e, 0, 0, 1}
	many := make([][6]byte, NetMACTableEntries+1)
	for i := range many {
		many[i] = [6]byte{0x02, 0, 0, 0, 1, byte(i)}
	}
	for _, tc := range []struct {
		name     string
		features uint64 // 0: all
		cmd      []byte
		ack      uint8
		pairs    int
		check    func(f *netRxFilter) bool
	}{
		{"empty", 0, nil, NetCtrlErr, 0, nil},
		{"class only", 0, []byte{NetCtrlMQ}, NetCtrlErr, 0, nil},
		{"pairs 2", 0, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 2, 0), NetCtrlOK, 2, nil},
		{"pairs 1", 0, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 1, 0), NetCtrlOK, 1, nil},
		{"pairs 0", 0, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 0, 0), NetCtrlErr, 0, nil},
		{"pairs beyond ready", 0, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 4, 0), NetCtrlErr, 0, nil},
		{"pairs beyond max", 0, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 5, 0), NetCtrlErr, 0, nil},
		{"pairs 0x8000", 0, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 0, 0x80), NetCtrlErr, 0, nil},
		{"pairs long", 0, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 2, 0, 0), NetCtrlErr, 0, nil},
		{"pairs without MQ", NetFCtrlVQ, cmd(NetCtrlMQ, NetCtrlMQPairsSet, 1, 0), NetCtrlErr, 0, nil},
		{"rss", 0, cmd(NetCtrlMQ, NetCtrlMQRSSConfig, 1, 0), NetCtrlErr, 0, nil},
		{"promisc off", 0, cmd(NetCtrlRX, NetCtrlRXPromisc, 0), NetCtrlOK, 0, func(f *netRxFilter) bool { return !f.promisc }},
		{"allmulti on", 0, cmd(NetCtrlRX, NetCtrlRXAllMulti, 1), NetCtrlOK, 0, func(f *netRxFilter) bool { return f.allMulti && f.promisc }},
		{"nobcast", 0, cmd(NetCtrlRX, NetCtrlRXNoBcast, 1), NetCtrlOK, 0, func(f *netRxFilter) bool { return f.noBcast }},
		{"nouni", 0, cmd(NetCtrlRX, NetCtrlRXNoUni, 7), NetCtrlOK, 0, func(f *netRxFilter) bool { return f.noUni }},
		{"rx mode without CTRL_RX", NetFCtrlVQ, cmd(NetCtrlRX, NetCtrlRXPromisc, 0), NetCtrlErr, 0, nil},
		{"extra without RX_EXTRA", NetFCtrlVQ | NetFCtrlRX, cmd(NetCtrlRX, NetCtrlRXAllUni, 1), NetCtrlErr, 0, nil},
		{"rx mode unknown", 0, cmd(NetCtrlRX, 6, 1), NetCtrlErr, 0, nil},
		{"rx mode no data", 0, cmd(NetCtrlRX, NetCtrlRXPromisc), NetCtrlErr, 0, nil},
		{"mac table", 0, cmd(NetCtrlMAC, NetCtrlMACTableSet, macTable([][6]byte{uni, uni}, [][6]byte{mc})...), NetCtrlOK, 0,
			func(f *netRxFilter) bool {
				return len(f.uni) == 1 && f.uni[0] == uni && len(f.multi) == 1 && !f.uniOverflow
			}},
		{"mac table empty", 0, cmd(NetCtrlMAC, NetCtrlMACTableSet, macTable(nil, nil)...), NetCtrlOK, 0,
			func(f *netRxFilter) bool { return len(f.uni) == 0 && len(f.multi) == 0 }},
		{"mac table overflow", 0, cmd(NetCtrlMAC, NetCtrlMACTableSet, macTable(many, nil)...), NetCtrlOK, 0,
			func(f *netRxFilter) bool { return f.uniOverflow && len(f.uni) == 0 }},
		{"mac table truncated", 0, cmd(NetCtrlMAC, NetCtrlMACTableSet, macTable([][6]byte{uni}, nil)[:9]...), NetCtrlErr, 0, nil},
		{"mac table trailing", 0, cmd(NetCtrlMAC, NetCtrlMACTableSet, append(macTable(nil, nil), 0)...), NetCtrlErr, 0, nil},
		{"mac table huge count", 0, cmd(NetCtrlMAC, NetCtrlMACTableSet, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0), NetCtrlErr, 0, nil},
		{"mac table no multicast list", 0, cmd(NetCtrlMAC, NetCtrlMACTableSet, 0, 0, 0, 0), NetCtrlErr, 0, nil},
		{"mac table without CTRL_RX", NetFCtrlVQ, cmd(NetCtrlMAC, NetCtrlMACTableSet, macTable(nil, nil)...), NetCtrlErr, 0, nil},
		{"mac addr", 0, cmd(NetCtrlMAC, NetCtrlMACAddrSet, uni[:]...), NetCtrlOK, 0, func(f *netRxFilter) bool { return f.mac == uni }},
		{"mac addr short", 0, cmd(NetCtrlMAC, NetCtrlMACAddrSet, uni[:5]...), NetCtrlErr, 0, nil},
		{"mac addr without CTRL_MAC_ADDR", NetFCtrlVQ | NetFCtrlRX, cmd(NetCtrlMAC, NetCtrlMACAddrSet, uni[:]...), NetCtrlErr, 0, nil},
		{"mac unknown", 0, cmd(NetCtrlMAC, 2), NetCtrlErr, 0, nil},
		{"vlan", 0, cmd(NetCtrlVLAN, 0, 1, 0), NetCtrlErr, 0, nil},
		{"announce", 0, cmd(NetCtrlAnnounce, 0), NetCtrlErr, 0, nil},
		{"guest offloads", 0, cmd(NetCtrlGuestOffloads, 0, 0, 0, 0, 0, 0, 0, 0, 0), NetCtrlErr, 0, nil},
		{"too long", 0, make([]byte, netCtrlMaxLen+1), NetCtrlErr, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := env
			if tc.features != 0 {
				e.features = tc.features
			}
			before := *cur
			r := decideNetCtrl(e, cur, tc.cmd)
			if r.ack != tc.ack || r.pairs != tc.pairs {
				t.Errorf("ack %d pairs %d, want %d %d", r.ack, r.pairs, tc.ack, tc.pairs)
			}
			if tc.check != nil && (r.filter == nil || !tc.check(r.filter)) {
				t.Errorf("filter %+v", r.filter)
			}
			if tc.ack == NetCtrlErr && (r.filter != nil || r.pairs != 0) {
				t.Error("a refused command carries a change")
			}
			if cur.promisc != before.promisc || cur.mac != before.mac || len(cur.uni) != len(before.uni) {
				t.Error("decideNetCtrl modified the current filter")
			}
		})
	}
}

func TestRxFilterAccept(t *testing.T) {
	other := [6]byte{0x02, 1, 2, 3, 4, 5}
	listed := [6]byte{0x02, 7, 7, 7, 7, 7}
	mc := [6]byte{0x01, 0, 0x5e, 0, 0, 1}
	mcOther := [6]byte{0x33, 0x33, 0, 0, 0, 1}
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	base := netRxFilter{mac: ctrlMAC, uni: [][6]byte{listed}, multi: [][6]byte{mc}}
	with := func(mod func(f *netRxFilter)) *netRxFilter { f := base; mod(&f); return &f }
	for _, tc := range []struct {
		name   string
		f      *netRxFilter
		accept [][6]byte
		refuse [][6]byte
	}{
		{"default", defaultRxFilter(ctrlMAC), [][6]byte{ctrlMAC, other, mc, mcOther, bcast}, nil},
		{"filtering", &base, [][6]byte{ctrlMAC, listed, mc, bcast}, [][6]byte{other, mcOther}},
		{"allmulti", with(func(f *netRxFilter) { f.allMulti = true }), [][6]byte{mcOther}, [][6]byte{other}},
		{"alluni", with(func(f *netRxFilter) { f.allUni = true }), [][6]byte{other}, [][6]byte{mcOther}},
		{"nomulti", with(func(f *netRxFilter) { f.noMulti = true; f.allMulti = true }), [][6]byte{ctrlMAC, bcast}, [][6]byte{mc}},
		{"nouni", with(func(f *netRxFilter) { f.noUni = true }), [][6]byte{mc, bcast}, [][6]byte{ctrlMAC, listed}},
		{"nobcast", with(func(f *netRxFilter) { f.noBcast = true }), [][6]byte{ctrlMAC}, [][6]byte{bcast}},
		{"overflow", with(func(f *netRxFilter) { f.uniOverflow, f.multiOverflow = true, true }), [][6]byte{other, mcOther}, nil},
	} {
		for _, m := range tc.accept {
			if !tc.f.accept(append(m[:], 0, 0, 0, 0, 0, 0, 8, 0)) {
				t.Errorf("%s: refused % x", tc.name, m)
			}
		}
		for _, m := range tc.refuse {
			if tc.f.accept(append(m[:], 0, 0, 0, 0, 0, 0, 8, 0)) {
				t.Errorf("%s: accepted % x", tc.name, m)
			}
		}
	}
	if base.accept([]byte{1, 2}) {
		t.Error("accepted a 2-byte frame")
	}
}

func TestCheckNetFeatures(t *testing.T) {
	for _, tc := range []struct {
		f  uint64
		ok bool
	}{
		{0, true},
		{NetFGuestTSO4 | NetFGuestCsum, true},
		{NetFGuestTSO4, false},
		{NetFHostTSO6, false},
		{NetFMQ | NetFCtrlVQ, true},
		{NetFMQ, false},
		{NetFCtrlRXExtra | NetFCtrlVQ, false},
		{NetFCtrlRXExtra | NetFCtrlRX | NetFCtrlVQ, true},
	} {
		if err := checkNetFeatures(tc.f); (err == nil) != tc.ok {
			t.Errorf("checkNetFeatures(%#x) = %v", tc.f, err)
		}
	}
}

// FuzzNetCtrl feeds arbitrary control commands (and negotiated feature
// sets) to the parser: it must answer every one without panicking, and an
// OK must carry a change that respects the limits.
func FuzzNetCtrl(f *testing.F) {
	f.Add(uint8(0xff), uint8(4), uint8(4), cmd(NetCtrlMQ, NetCtrlMQPairsSet, 2, 0))
	f.Add(uint8(0xff), uint8(4), uint8(4), cmd(NetCtrlRX, NetCtrlRXPromisc, 0))
	f.Add(uint8(0xff), uint8(1), uint8(1), cmd(NetCtrlMAC, NetCtrlMACTableSet, macTable([][6]byte{ctrlMAC}, [][6]byte{{1, 0, 0x5e, 0, 0, 1}})...))
	f.Add(uint8(0xff), uint8(1), uint8(1), cmd(NetCtrlMAC, NetCtrlMACTableSet, 0xff, 0xff, 0xff, 0x7f))
	f.Add(uint8(0xff), uint8(8), uint8(2), cmd(NetCtrlMAC, NetCtrlMACAddrSet, 2, 0, 0, 0, 0, 1))
	f.Add(uint8(0), uint8(32), uint8(32), cmd(NetCtrlVLAN, 0, 1, 0))
	f.Add(uint8(0xff), uint8(2), uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, fbits, maxPairs, ready uint8, data []byte) {
		features := NetFCtrlVQ
		for i, bit := range []uint64{NetFCtrlRX, NetFCtrlRXExtra, NetFCtrlMACAddr, NetFMQ, NetFCtrlVLAN, NetFGuestAnn} {
			if fbits&(1<<i) != 0 {
				features |= bit
			}
		}
		env := netCtrlEnv{features: features, maxPairs: int(maxPairs), readyPairs: int(ready)}
		cur := defaultRxFilter(ctrlMAC)
		r := decideNetCtrl(env, cur, data)
		switch r.ack {
		case NetCtrlErr:
			if r.filter != nil || r.pairs != 0 {
				t.Fatal("refused command with a change")
			}
		case NetCtrlOK:
			if r.pairs != 0 && (r.pairs < 1 || r.pairs > env.maxPairs || r.pairs > env.readyPairs || features&NetFMQ == 0) {
				t.Fatalf("pairs %d accepted (max %d, ready %d)", r.pairs, env.maxPairs, env.readyPairs)
			}
			if r.filter != nil {
				if len(r.filter.uni) > NetMACTableEntries || len(r.filter.multi) > NetMACTableEntries {
					t.Fatal("MAC table over its size")
				}
				if features&NetFCtrlRX == 0 && !r.macSet {
					t.Fatal("filter changed without CTRL_RX")
				}
				r.filter.accept(data)
			}
			if r.filter == nil && r.pairs == 0 {
				t.Fatal("OK without a change")
			}
		default:
			t.Fatalf("ack %d", r.ack)
		}
	})
}
