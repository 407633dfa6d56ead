package vmm

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// NetBackend says who moves a virtio-net device's packets.
type NetBackend int

const (
	// NetTAP: govmm's own userspace data path over a (multi-queue) TAP.
	NetTAP NetBackend = iota
	// NetVhostNet: the kernel's vhost-net, one /dev/vhost-net fd per
	// queue pair, each bound to its own queue of a multi-queue TAP.
	NetVhostNet
	// NetVhostUser: a vhost-user-net backend process over a Unix socket.
	NetVhostUser
)

func (b NetBackend) String() string {
	switch b {
	case NetTAP:
		return "tap"
	case NetVhostNet:
		return "vhost-net"
	case NetVhostUser:
		return "vhost-user"
	}
	return fmt.Sprintf("backend(%d)", int(b))
}

// MaxQueuePairs is the most queue pairs a govmm virtio-net device offers
// (VIRTIO_NET_F_MQ allows more; 32 pairs = 64 data queues + control queue
// keeps one device's notifiers well inside one 4 KiB virtio-mmio window's
// datamatch space and matches common multi-queue TAP limits).
const MaxQueuePairs = 32

// maxTAPQueues is what a Linux TAP accepts (MAX_TAP_QUEUES).
const maxTAPQueues = 256

// ifNameSize is IFNAMSIZ: a Linux interface name has at most 15 bytes.
const ifNameSize = 16

// NetConfig is one --net device.
type NetConfig struct {
	Backend NetBackend
	// TAP is the TAP interface name (NetTAP, NetVhostNet).
	TAP string
	// Socket is the vhost-user socket path (NetVhostUser).
	Socket string
	// Server makes govmm listen on Socket and wait for the backend to
	// connect, instead of connecting to a listening backend.
	Server bool
	// MAC is the guest's MAC address; a locally administered one is
	// generated when nil.
	MAC net.HardwareAddr
	// QueuePairs is the number of RX/TX queue pairs (1..MaxQueuePairs).
	QueuePairs int
}

// ParseNetSpec parses one --net value:
//
//	tap=NAME[,mac=MAC][,queues=N][,vhost=on|off]
//	vhost-user=SOCKET[,mac=MAC][,queues=N][,server]
//
// queues counts queue pairs. Every error names the offending part.
func ParseNetSpec(spec string) (NetConfig, error) {
	c := NetConfig{QueuePairs: 1}
	parts := strings.Split(spec, ",")
	kind, val, ok := strings.Cut(parts[0], "=")
	if !ok {
		return c, fmt.Errorf("--net %q: want tap=NAME or vhost-user=SOCKET first", spec)
	}
	switch kind {
	case "tap":
		c.Backend, c.TAP = NetTAP, val
		if val == "" {
			return c, fmt.Errorf("--net %q: empty TAP name", spec)
		}
		if len(val) >= ifNameSize {
			return c, fmt.Errorf("--net %q: TAP name %q is %d bytes, longer than the %d Linux allows", spec, val, len(val), ifNameSize-1)
		}
		if strings.ContainsAny(val, "/ \t\n:") {
			return c, fmt.Errorf("--net %q: TAP name %q contains a character Linux does not allow", spec, val)
		}
	case "vhost-user":
		c.Backend, c.Socket = NetVhostUser, val
		if val == "" {
			return c, fmt.Errorf("--net %q: empty vhost-user socket path", spec)
		}
	default:
		return c, fmt.Errorf("--net %q: unknown backend %q (want tap or vhost-user)", spec, kind)
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return c, fmt.Errorf("--net %q: bad MAC %q: want six colon-separated hex bytes", spec, v)
			}
			if mac[0]&1 != 0 {
				return c, fmt.Errorf("--net %q: MAC %s is a multicast address", spec, mac)
			}
			c.MAC = mac
		case "queues":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxQueuePairs {
				return c, fmt.Errorf("--net %q: queues=%s: want a queue-pair count from 1 to %d", spec, v, MaxQueuePairs)
			}
			c.QueuePairs = n
		case "vhost":
			if c.Backend != NetTAP {
				return c, fmt.Errorf("--net %q: vhost= applies to tap devices only", spec)
			}
			switch v {
			case "on":
				c.Backend = NetVhostNet
			case "off":
			default:
				return c, fmt.Errorf("--net %q: vhost=%s: want on or off", spec, v)
			}
		case "server":
			if c.Backend != NetVhostUser {
				return c, fmt.Errorf("--net %q: server applies to vhost-user devices only", spec)
			}
			c.Server = true
		default:
			return c, fmt.Errorf("--net %q: unknown option %q", spec, k)
		}
	}
	return c, nil
}

// ValidateNets checks a machine's --net devices together: two devices
// cannot share a TAP (their queues would be split between them) or a
// vhost-user socket, and virtio-mmio slots are limited.
func ValidateNets(nets []NetConfig, maxDevices int) error {
	if len(nets) > maxDevices {
		return fmt.Errorf("%d --net devices: at most %d virtio-mmio devices fit", len(nets), maxDevices)
	}
	seenTAP := map[string]int{}
	seenSock := map[string]int{}
	for i, n := range nets {
		switch n.Backend {
		case NetTAP, NetVhostNet:
			if j, ok := seenTAP[n.TAP]; ok {
				return fmt.Errorf("--net devices %d and %d both use TAP %q", j, i, n.TAP)
			}
			seenTAP[n.TAP] = i
		case NetVhostUser:
			if j, ok := seenSock[n.Socket]; ok {
				return fmt.Errorf("--net devices %d and %d both use vhost-user socket %q", j, i, n.Socket)
			}
			seenSock[n.Socket] = i
		}
	}
	return nil
}
