package vunet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/govmm/govmm/vhostnet/vhostuser"
	"github.com/govmm/govmm/virtio"
)

// Config configures a Server.
type Config struct {
	// Backend provides one packet endpoint per queue pair (a TAP's
	// queues) and the offload and steering controls. Required.
	Backend virtio.NetBackend
	// QueuePairs is the number of pairs served (1..virtio.NetMaxQueuePairs).
	QueuePairs int
	// Offloads the backend can handle; each is offered in both directions.
	Offloads virtio.NetOffloads
	// Logger receives session events and errors. nil: discard.
	Logger *slog.Logger
}

// Stats are a server's cumulative counters.
type Stats struct {
	// Sessions counts front-end connections served; Failed those that
	// ended on an error (protocol violation, refused request the
	// front-end could not be told about).
	Sessions, Failed uint64
	// Pairs is the data path's totals over every session.
	Pairs virtio.NetPairStats
}

// Server serves vhost-user-net sessions, one at a time.
type Server struct {
	cfg     Config
	log     *slog.Logger
	offered uint64

	one      sync.Mutex // one session at a time
	sessions atomic.Uint64
	failed   atomic.Uint64
	statsMu  sync.Mutex
	retired  virtio.NetPairStats
	live     *session
}

// New returns a server for cfg. Every pair's endpoint is detached until a
// front-end starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("vhost-user-net: no backend")
	}
	if cfg.QueuePairs < 1 || cfg.QueuePairs > virtio.NetMaxQueuePairs || 2*cfg.QueuePairs > vhostuser.MaxVringIndex+1 {
		return nil, fmt.Errorf("vhost-user-net: %d queue pairs, want 1 to %d", cfg.QueuePairs, virtio.NetMaxQueuePairs)
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.offered = virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc |
		virtio.NetFMrgRxbuf | vhostuser.FeatureProtocolFeatures
	if cfg.QueuePairs > 1 {
		s.offered |= virtio.NetFMQ
	}
	if cfg.Offloads&virtio.NetOffloadCsum != 0 {
		s.offered |= virtio.NetFCsum | virtio.NetFGuestCsum
		if cfg.Offloads&virtio.NetOffloadTSO4 != 0 {
			s.offered |= virtio.NetFHostTSO4 | virtio.NetFGuestTSO4
		}
		if cfg.Offloads&virtio.NetOffloadTSO6 != 0 {
			s.offered |= virtio.NetFHostTSO6 | virtio.NetFGuestTSO6
		}
	}
	for i := 1; i < cfg.QueuePairs; i++ {
		if err := cfg.Backend.EnablePair(i, false); err != nil {
			return nil, fmt.Errorf("vhost-user-net: detach pair %d: %w", i, err)
		}
	}
	return s, nil
}

// Features returns the virtio feature bits the server offers.
func (s *Server) Features() uint64 { return s.offered }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	st := Stats{Sessions: s.sessions.Load(), Failed: s.failed.Load()}
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st.Pairs = s.retired
	if s.live != nil {
		st.Pairs = st.Pairs.Add(s.live.pairStats())
	}
	return st
}

// Serve accepts front-ends on ln and serves them one after the other,
// until ctx ends (it returns ctx.Err()) or accepting fails for good. A
// session that fails is logged and does not stop the server.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("vhost-user-net: accept: %w", err)
		}
		if err := s.ServeConn(ctx, conn); err != nil && ctx.Err() == nil {
			s.log.Warn("vhost-user-net session ended with an error", "err", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// ServeConn serves one front-end on conn until it disconnects (nil), ctx
// ends, or the session fails; everything the session acquired (workers,
// eventfds, guest memory mappings, attached TAP queues) is released
// before it returns. Sessions are serialised.
func (s *Server) ServeConn(ctx context.Context, conn *net.UnixConn) error {
	s.one.Lock()
	defer s.one.Unlock()
	s.sessions.Add(1)
	h := newSession(s)
	s.statsMu.Lock()
	s.live = h
	s.statsMu.Unlock()
	s.log.Info("vhost-user-net front-end connected")
	err := vhostuser.Serve(ctx, conn, h)
	h.close()
	s.statsMu.Lock()
	s.retired = s.retired.Add(h.retired)
	s.live = nil
	s.statsMu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		s.failed.Add(1)
		return err
	}
	s.log.Info("vhost-user-net front-end disconnected")
	return nil
}
