package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vmm/hostprobe"
)

func cmdProbe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("probe", "probe [--kvm PATH] [--json]", stdout)
	path := fs.String("kvm", kvm.DevicePath, "KVM device")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	r, err := hostprobe.Probe(ctx, *path)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	r.WriteText(stdout)
	return nil
}
