package sds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca/store"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds/envoy"
	"github.com/certmesh/certmesh/sds/workload"
)

// EndpointsConfig configures the agent's unix socket.
type EndpointsConfig struct {
	// Socket is the path of the unix socket Envoy and workloads dial.
	Socket string
	Agent  *Agent
	// Attestor turns a caller's peer credentials into its identity.
	Attestor   identity.Attestor
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      clock.PassiveClock
}

// Limits of the agent socket: requests are small, streams are many.
const (
	socketMaxRecvMsgSize       = 1 << 20
	socketMaxConcurrentStreams = 1000
)

// ServeEndpoints serves Envoy SDS and the SPIFFE Workload API on one unix
// socket, as SPIRE's agent does, until ctx ends. The socket is open to every
// local uid: attestation of the caller's peer credentials, not file
// permissions, decides who gets what.
func ServeEndpoints(ctx context.Context, cfg EndpointsConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	envoyMetrics, err := envoy.NewMetrics(cfg.Registerer)
	if err != nil {
		return err
	}
	sdsHandler, err := envoy.New(envoy.Config{Source: cfg.Agent, Attestor: cfg.Attestor, Logger: cfg.Logger, Metrics: envoyMetrics,
		Acks: scopedAcks{cfg.Agent.acks, "envoy"}})
	if err != nil {
		return err
	}
	wlHandler, err := workload.New(workload.Config{Source: cfg.Agent, Attestor: cfg.Attestor, Logger: cfg.Logger,
		Metrics: workload.NewMetrics(cfg.Registerer), Clock: cfg.Clock, Acks: scopedAcks{cfg.Agent.acks, "workload"}})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("sds: agent socket: %w", err)
	}
	lis, err := store.ListenUnix(cfg.Socket, 0o777)
	if err != nil {
		return fmt.Errorf("sds: agent socket: %w", err)
	}
	if blocked := store.Unsearchable(cfg.Socket); blocked != "" {
		cfg.Logger.Warn("workloads of other uids cannot reach the agent socket: a directory on the way is closed to them; put the socket (--socket) where every uid can traverse, e.g. /run/certmesh/agent.sock",
			"socket", cfg.Socket, "directory", blocked)
	}
	g := grpc.NewServer(
		grpc.Creds(identity.PeerCredentials()),
		grpc.MaxRecvMsgSize(socketMaxRecvMsgSize),
		grpc.MaxConcurrentStreams(socketMaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	sdsHandler.Register(g)
	wlHandler.Register(g)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	cfg.Logger.Info("agent socket ready", "socket", cfg.Socket)
	select {
	case err := <-errc:
		return fmt.Errorf("sds: agent socket: %w", err)
	case <-ctx.Done():
	}
	// Streams (SDS, FetchX509SVID) last as long as their clients: stop them.
	g.Stop()
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("sds: agent socket: %w", err)
	}
	return nil
}
