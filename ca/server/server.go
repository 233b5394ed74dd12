// Package server assembles the CA side of certmesh: the CA and its state
// directory lock, join tokens, the gRPC signing service on a TLS listener
// and the local admin socket. `certmesh server` and `certmesh dev` both run it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/admin"
	"github.com/certmesh/certmesh/ca/leader"
	"github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/ca/store"
	"github.com/certmesh/certmesh/identity"
)

// DefaultListen is the CA's gRPC address: loopback unless told otherwise.
const DefaultListen = "127.0.0.1:8443"

// Config configures a Server.
type Config struct {
	// Dir is the state directory (the CA lives in Dir/ca).
	Dir         string
	TrustDomain spiffeid.TrustDomain
	// Registrations, if set, gives registered identities their DNS names
	// and lets node agents request them: an *identity.Registrations, or an
	// *identity.RegistrationsFile, whose reloads apply to the next request.
	Registrations service.Registry
	Listen        string
	CA            ca.Config // Dir, TrustDomain, Clock and Logger are filled in
	// Attestors are tried for bearer tokens after join tokens (Kubernetes
	// ServiceAccount tokens, for one).
	Attestors  []identity.Attestor
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Clock      clock.Clock
	// StatusExtra adds sections to the admin status (the edge, in dev mode).
	StatusExtra func() map[string]any
	// Kubernetes, when set, shares the CA with other replicas through the
	// API server and runs leader-only work under a Lease (kubernetes.go).
	Kubernetes *KubernetesConfig
}

// Server is a running CA.
type Server struct {
	cfg    Config
	CA     *ca.CA
	Tokens *identity.JoinTokens
	lock   *store.Lock
	lis    net.Listener
	grpc   *grpc.Server

	agentAPI *service.AgentAPI
	acks     *service.AckRegistry

	// Leader runs leader-only work in Kubernetes mode (nil otherwise).
	// Add Runners to it before Run.
	Leader *leader.Leader
	kube   *kube
}

// Acks is the registry of agents' bundle acknowledgements (the rotation gate).
func (s *Server) Acks() *service.AckRegistry { return s.acks }

// New takes the state directory's lock, opens (or creates) the CA and binds
// the gRPC listener, so that a second server on the same directory or port
// fails here with a clear error rather than later.
func New(cfg Config) (_ *Server, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("server: state directory: %w", err)
	}
	lock, err := store.LockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, lock: lock}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	caCfg := cfg.CA
	caCfg.Dir, caCfg.TrustDomain, caCfg.Clock, caCfg.Logger = filepath.Join(cfg.Dir, "ca"), cfg.TrustDomain, cfg.Clock, cfg.Logger
	if cfg.Kubernetes != nil {
		if err := s.primeKubernetes(caCfg.Dir); err != nil {
			return nil, err
		}
	}
	if s.CA, err = ca.New(caCfg); err != nil {
		return nil, err
	}
	if cfg.Kubernetes != nil {
		if err := s.setupKubernetes(); err != nil {
			return nil, err
		}
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(newCACollector(s.CA)); err != nil {
			return nil, fmt.Errorf("server: metrics: %w", err)
		}
	}
	s.Tokens, err = identity.NewJoinTokens(identity.JoinTokensConfig{
		TrustDomain: cfg.TrustDomain, Clock: cfg.Clock,
		Store: store.File{Path: filepath.Join(cfg.Dir, "join-tokens.json"), Perm: 0o600},
	})
	if err != nil {
		return nil, err
	}
	if err := s.buildGRPC(); err != nil {
		return nil, err
	}
	if s.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("server: listen %s: %w", cfg.Listen, err)
	}
	return s, nil
}

func (s *Server) buildGRPC() error {
	registry := s.cfg.Registrations
	attestors := append(identity.Chain{s.Tokens}, s.cfg.Attestors...)
	svc, err := service.New(service.Config{
		CA: s.CA, Attestor: attestors, Registry: registry, Logger: s.cfg.Logger,
		Metrics: service.NewMetrics(s.cfg.Registerer), Clock: s.cfg.Clock,
	})
	if err != nil {
		return err
	}
	sc := &service.ServingCert{CA: s.CA, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, Clock: s.cfg.Clock}
	if host, _, err := net.SplitHostPort(s.cfg.Listen); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			sc.IPAddresses = append(sc.IPAddresses, ip)
		} else if ip == nil && host != "" {
			sc.DNSNames = append(sc.DNSNames, host)
		}
	}
	s.grpc = service.NewGRPCServer(svc.TransportCredentials(sc.ServerTLSConfig()), grpc.UnaryInterceptor(svc.UnaryShedder()))
	svc.Register(s.grpc)
	s.agentAPI = svc.NewAgentAPI(s.CA)
	s.agentAPI.Register(s.grpc)
	s.acks = svc.NewAckRegistry()
	s.acks.Register(s.grpc)
	gate := s.acks.Gate
	if s.kube != nil {
		if gate, err = s.kubernetesAckGate(s.acks); err != nil {
			return err
		}
	}
	s.CA.SetRotationGate(func() (bool, int) { return gate(ca.BundleDigest(s.CA.Roots())) })
	return nil
}

// Addr is the gRPC listener's address (useful with port 0).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// AdminSocket is the path of the admin socket.
func (s *Server) AdminSocket() string { return filepath.Join(s.cfg.Dir, admin.SocketName) }

// GRPC exposes the gRPC server so that more services can share the listener.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Run serves until ctx ends, then releases the listener and the lock.
func (s *Server) Run(ctx context.Context) error {
	defer s.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return service.Serve(ctx, s.grpc, s.lis) })
	g.Go(func() error { <-ctx.Done(); s.agentAPI.Stop(); return nil })
	s.runCA(ctx, g)
	g.Go(func() error { return admin.Serve(ctx, s.AdminSocket(), admin.Handler(s, s.cfg.Logger)) })
	s.cfg.Logger.Info("CA server ready", "listen", s.Addr(), "trust_domain", s.cfg.TrustDomain.Name(), "admin_socket", s.AdminSocket())
	return g.Wait()
}

// Close releases what New acquired; Run calls it on the way out.
func (s *Server) Close() error {
	var errs []error
	if s.lis != nil {
		if err := s.lis.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.lock.Unlock())
	return errors.Join(errs...)
}

// CreateJoinToken implements admin.Backend.
func (s *Server) CreateJoinToken(id spiffeid.ID, ttl time.Duration) (string, time.Time, error) {
	return s.Tokens.Create(id, ttl)
}

// ErrNotLeader refuses an operator's CA rotation on a replica that does not
// hold the Lease: rotation state is the leader's to write, and a follower's
// write could race with the leader's next step and be lost.
var ErrNotLeader = errors.New("server: this replica is not the leader")

// Rotate implements admin.Backend. In Kubernetes mode only the leader starts a
// rotation; a follower's refusal names the leader to run it on.
func (s *Server) Rotate() (any, error) {
	if s.Leader != nil && !s.Leader.IsLeader() {
		leader := s.Leader.Current()
		if leader == "" {
			leader = "not known yet"
		}
		return nil, fmt.Errorf("%w (this is %s; the leader is %s): run `certmesh ca rotate` on the leader's pod", ErrNotLeader, s.Leader.Identity(), leader)
	}
	return s.CA.Rotate()
}

// Status implements admin.Backend.
func (s *Server) Status() any {
	out := map[string]any{"ca": s.CA.Status()}
	if k := s.kubernetesStatus(); k != nil {
		out["kubernetes"] = k
	}
	if s.cfg.StatusExtra != nil {
		for k, v := range s.cfg.StatusExtra() {
			out[k] = v
		}
	}
	return out
}
