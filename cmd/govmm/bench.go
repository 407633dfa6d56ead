package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/govmm/govmm/notifierbench"
)

// benchmarks lists the `govmm bench` subcommands.
func benchmarks() []command {
	return []command{
		{"notifiers", "KVM_IOEVENTFD enable/disable: raw vs batched vs one commit per queue", benchNotifiers},
		{"startup", "time from exec to the guest's first serial byte: govmm vs a direct KVM harness", benchStartup},
		{"attach", "vhost-user-net attach/detach: one commit for all notifiers vs one per queue", benchAttach},
	}
}

func cmdBench(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprintln(w, "usage: govmm bench <what> [flags]\n\nwhat:")
		for _, b := range benchmarks() {
			fmt.Fprintf(w, "  %-10s %s\n", b.name, b.summary)
		}
		if len(args) == 0 {
			return usageErrorf("bench: say what to measure")
		}
		return nil
	}
	for _, b := range benchmarks() {
		if b.name == args[0] {
			return b.run(args[1:], stdout, stderr)
		}
	}
	return usageErrorf("bench: unknown benchmark %q (see govmm bench --help)", args[0])
}

func benchNotifiers(args []string, stdout, stderr io.Writer) error {
	def := notifierbench.DefaultOptions()
	fs := newFlagSet("bench notifiers", "bench notifiers [--devices D] [--queues Q] [--rounds R] [--json]", stdout)
	devices := fs.Int("devices", def.Devices, "virtio-net devices (each a virtio-mmio slot)")
	queues := fs.Int("queues", def.Queues, "virtqueues per device (each one KVM ioeventfd at QueueNotify, datamatch = queue index)")
	rounds := fs.Int("rounds", def.Rounds, "rounds; the table shows medians")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	if err := fs.parse(args); err != nil {
		return err
	}
	o := def
	o.Devices, o.Queues, o.Rounds = *devices, *queues, *rounds
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	res, err := notifierbench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	return res.WriteTable(stdout)
}
