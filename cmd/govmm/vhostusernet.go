package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/govmm/govmm/tap"
	"github.com/govmm/govmm/vhostnet"
	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/vhostnet/vunet"
	"github.com/govmm/govmm/virtio"
)

// cmdVhostUserNet serves a vhost-user-net backend over a TAP: a VMM (govmm
// run --net vhost-user=SOCKET, QEMU -netdev vhost-user) connects to the
// socket and the backend moves the device's packets between guest memory
// and the TAP's queues, one queue pair per TAP queue. It serves one VMM at
// a time and outlives their connections; SIGINT or SIGTERM stop it.
func cmdVhostUserNet(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("vhost-user-net", "vhost-user-net --socket PATH --tap NAME [--queues N]", stdout)
	sock := fs.String("socket", "", "Unix socket to listen on for the VMM (created; a stale one left by a dead backend is replaced)")
	tapName := fs.String("tap", "", "TAP interface: attached to if it exists (multi-queue for N > 1), else created and removed at exit")
	queues := fs.Int("queues", 1, fmt.Sprintf("queue pairs, each served by one TAP queue (1 to %d)", virtio.NetMaxQueuePairs))
	logLevel := fs.String("log-level", "info", "log level on stderr: debug, info, warn, error")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *sock == "" {
		return usageErrorf("vhost-user-net: --socket is required")
	}
	if *tapName == "" {
		return usageErrorf("vhost-user-net: --tap is required")
	}
	if err := tap.ValidateName(*tapName); err != nil {
		return usageErrorf("vhost-user-net: --tap: %v", err)
	}
	if *queues < 1 || *queues > virtio.NetMaxQueuePairs {
		return usageErrorf("vhost-user-net: --queues %d: want 1 to %d", *queues, virtio.NetMaxQueuePairs)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErrorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	dev, err := tap.Open(*tapName, *queues, tap.Options{})
	if err != nil {
		return err
	}
	defer dev.Close()
	be := vhostnet.NewTAPBackend(dev)
	srv, err := vunet.New(vunet.Config{
		Backend:    be,
		QueuePairs: *queues,
		Offloads:   be.Offloads(),
		Logger:     log,
	})
	if err != nil {
		return err
	}
	ln, err := vhostuser.ListenUnix(*sock)
	if err != nil {
		return err
	}
	defer ln.Close()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	log.Info("vhost-user-net backend ready", "socket", *sock, "tap", dev.Name(), "queue_pairs", *queues, "tap_created", dev.Created())
	err = srv.Serve(ctx, ln)
	st := srv.Stats()
	fmt.Fprintf(stderr, "vhost-user-net: sessions=%d failed=%d tx_packets=%d rx_packets=%d tx_dropped=%d rx_dropped=%d\n",
		st.Sessions, st.Failed, st.Pairs.TXPackets, st.Pairs.RXPackets, st.Pairs.TXDropped, st.Pairs.RXDropped)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
