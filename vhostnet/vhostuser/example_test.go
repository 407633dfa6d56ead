package vhostuser_test

import (
	"context"
	"log"
	"net"
	"os"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vhostnet/vhostuser"
)

// The front-end's start sequence for one queue, against a back-end
// listening at a socket path. guestRAM is the memfd backing guest memory.
func ExampleDial() {
	var guestRAM *os.File // the VMM's guest memory file (memfd)
	fe, err := vhostuser.Dial("vhost-user-net.sock", vhostuser.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer fe.Close()

	features, _, err := fe.NegotiateProtocolFeatures(vhostuser.SupportedProtocolFeatures)
	if err != nil {
		log.Fatal(err)
	}
	if err := fe.SetOwner(); err != nil {
		log.Fatal(err)
	}
	if err := fe.SetFeatures(features); err != nil {
		log.Fatal(err)
	}
	err = fe.SetMemTable([]vhostuser.SharedMemoryRegion{{
		MemoryRegion: vhostuser.MemoryRegion{GuestPhysAddr: 0, Size: 1 << 30, UserAddr: 0x7f00_0000_0000},
		File:         guestRAM,
	}})
	if err != nil {
		log.Fatal(err)
	}
	kick, _ := kvm.NewEventFD() // registered as an ioeventfd in a real VMM
	call, _ := kvm.NewEventFD() // registered as an irqfd in a real VMM
	steps := []error{
		fe.SetVringNum(0, 256),
		fe.SetVringBase(0, 0),
		fe.SetVringAddr(vhostuser.VringAddr{Index: 0, Desc: 0x7f00_0010_0000, Avail: 0x7f00_0010_1000, Used: 0x7f00_0010_2000}),
		fe.SetVringKick(0, kick),
		fe.SetVringCall(0, call),
	}
	if features&vhostuser.FeatureProtocolFeatures != 0 { // rings start disabled
		steps = append(steps, fe.SetVringEnable(0, true))
	}
	for _, err := range steps {
		if err != nil {
			log.Fatal(err)
		}
	}
}

// A back-end accepts connections and serves each with a device Handler.
func ExampleServe() {
	var newDevice func() vhostuser.Handler // e.g. a vhost-user-net device
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: "vhost-user-net.sock", Net: "unix"})
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			log.Fatal(err)
		}
		if err := vhostuser.Serve(context.Background(), c, newDevice()); err != nil {
			log.Printf("front-end session ended: %v", err)
		}
	}
}
