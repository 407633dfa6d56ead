package vmm

import (
	"strings"
	"testing"
)

func TestParseNetSpec(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		want    NetConfig
		wantErr string
	}{
		{spec: "tap=tap0", want: NetConfig{Backend: NetTAP, TAP: "tap0", QueuePairs: 1}},
		{spec: "tap=tap0,queues=4", want: NetConfig{Backend: NetTAP, TAP: "tap0", QueuePairs: 4}},
		{spec: "tap=t,vhost=on,queues=2", want: NetConfig{Backend: NetVhostNet, TAP: "t", QueuePairs: 2}},
		{spec: "tap=t,vhost=off", want: NetConfig{Backend: NetTAP, TAP: "t", QueuePairs: 1}},
		{spec: "vhost-user=/run/vu.sock,queues=32", want: NetConfig{Backend: NetVhostUser, Socket: "/run/vu.sock", QueuePairs: 32}},
		{spec: "vhost-user=s,server", want: NetConfig{Backend: NetVhostUser, Socket: "s", Server: true, QueuePairs: 1}},
		{spec: "tap=", wantErr: "empty TAP name"},
		{spec: "tap=abcdefghijklmnop", wantErr: "longer than the 15"},
		{spec: "tap=a/b", wantErr: "does not allow"},
		{spec: "tap=t,queues=0", wantErr: "queues=0"},
		{spec: "tap=t,queues=65", wantErr: "queues=65"},
		{spec: "tap=t,queues=x", wantErr: "queues=x"},
		{spec: "tap=t,mac=zz:00:00:00:00:00", wantErr: "bad MAC"},
		{spec: "tap=t,mac=01:00:00:00:00:01", wantErr: "multicast"},
		{spec: "tap=t,mac=00:11:22:33:44:55:66:77", wantErr: "bad MAC"},
		{spec: "tap=t,color=red", wantErr: "unknown option"},
		{spec: "tap=t,vhost=maybe", wantErr: "vhost=maybe"},
		{spec: "vhost-user=", wantErr: "empty vhost-user socket"},
		{spec: "vhost-user=s,vhost=on", wantErr: "tap devices only"},
		{spec: "tap=t,server", wantErr: "vhost-user devices only"},
		{spec: "user", wantErr: "want tap=NAME"},
		{spec: "slirp=x", wantErr: "unknown backend"},
	} {
		got, err := ParseNetSpec(tc.spec)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseNetSpec(%q) = %+v, %v; want error containing %q", tc.spec, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Backend != tc.want.Backend || got.TAP != tc.want.TAP || got.Socket != tc.want.Socket ||
			got.QueuePairs != tc.want.QueuePairs || got.Server != tc.want.Server {
			t.Errorf("ParseNetSpec(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	c, err := ParseNetSpec("tap=t,mac=52:54:00:12:34:56")
	if err != nil || c.MAC.String() != "52:54:00:12:34:56" {
		t.Errorf("mac: %v %v", c.MAC, err)
	}
}

func TestValidateNets(t *testing.T) {
	a, _ := ParseNetSpec("tap=tap0")
	b, _ := ParseNetSpec("tap=tap0,vhost=on")
	c, _ := ParseNetSpec("tap=tap1")
	if err := ValidateNets([]NetConfig{a, c}, 19); err != nil {
		t.Fatal(err)
	}
	if err := ValidateNets([]NetConfig{a, b}, 19); err == nil || !strings.Contains(err.Error(), "both use TAP") {
		t.Fatalf("same TAP twice: %v", err)
	}
	u, _ := ParseNetSpec("vhost-user=s")
	if err := ValidateNets([]NetConfig{u, u}, 19); err == nil || !strings.Contains(err.Error(), "both use vhost-user socket") {
		t.Fatalf("same socket twice: %v", err)
	}
	if err := ValidateNets([]NetConfig{a, c}, 1); err == nil {
		t.Fatal("too many devices accepted")
	}
}
