package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/govmm/govmm/vhostnet/attachbench"
)

// benchAttach is `govmm bench attach`: D in-process vhost-user-net
// backends and a VM with D devices of P pairs, attached and detached
// together round after round, batched against one commit per queue, with
// the notifier and backend-messaging phases timed apart.
func benchAttach(args []string, stdout, stderr io.Writer) error {
	def := attachbench.DefaultOptions()
	fs := newFlagSet("bench attach", "bench attach [--devices D] [--pairs P] [--rounds R] [--json]", stdout)
	devices := fs.Int("devices", def.Devices, "vhost-user virtio-net devices, each with its own in-process backend")
	pairs := fs.Int("pairs", def.Pairs, "queue pairs per device (two queue notifiers each)")
	rounds := fs.Int("rounds", def.Rounds, "attach/detach rounds per mode; medians are reported")
	queueSize := fs.Uint("queue-size", uint(def.QueueSize), "size of each data queue")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	if err := fs.parse(args); err != nil {
		return err
	}
	o := def
	o.Devices, o.Pairs, o.Rounds, o.QueueSize = *devices, *pairs, *rounds, uint16(*queueSize)
	if *queueSize > 1024 {
		return usageErrorf("bench attach: --queue-size %d: at most 1024", *queueSize)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	res, err := attachbench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	return res.WriteTable(stdout)
}
