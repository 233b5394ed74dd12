// Package server is the one assembly of certmesh's control plane: `certmesh
// server`, Kubernetes mode and `certmesh dev` all fill a Config and call New
// then Run, so what runs, and in which order, is written once, here. cmd/
// only turns flags and environment into a Config and prints.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"

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
	"github.com/certmesh/certmesh/ca/upstream"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/ingress"
	"github.com/certmesh/certmesh/identity"
)

// DefaultListen is the CA's gRPC address: loopback unless told otherwise.
const DefaultListen = "127.0.0.1:8443"

// Config is everything a Server needs. The optional parts are pointers: nil
// leaves them out.
type Config struct {
	// Dir is the state directory (the CA lives in Dir/ca).
	Dir         string
	TrustDomain spiffeid.TrustDomain
	Listen      string // the gRPC (TLS) listener; default DefaultListen
	// ServerDNSNames are more DNS names for the listener's certificate, beside
	// localhost, the loopback IPs and the host of Listen: the names callers
	// dial, such as a Kubernetes Service's (certmesh.<ns>.svc) or Istio's
	// (wire.IstioCAServiceName).
	ServerDNSNames []string
	CA             ca.Config // TTLs, key type, overlap; Dir, TrustDomain, Clock and Logger are filled in
	// Registrations, if set, gives registered identities their DNS names and
	// lets node agents request them (a fixed set; tests and embedders).
	Registrations service.Registry
	// RegistrationsFile, when its Path is set, replaces Registrations with a
	// file that Run follows (registrations.go).
	RegistrationsFile RegistrationsFileConfig
	// Attestors are tried for bearer tokens after join tokens.
	Attestors []identity.Attestor
	// MetricsAddr serves /metrics, /healthz and /readyz (off when empty).
	MetricsAddr string
	// Registerer receives every metric; with MetricsAddr it must be a
	// *prometheus.Registry (default then: NewRegistry()).
	Registerer prometheus.Registerer
	Logger     *slog.Logger // default: discard
	Clock      clock.Clock

	// Edge, when set, obtains public ACME certificates (edge.go); Dir,
	// Logger and OrderMetrics are filled in when empty.
	Edge *edge.Config
	// Kubernetes shares the CA with other replicas through the API server
	// and runs leader-only work under a Lease (kubernetes.go).
	Kubernetes *KubernetesConfig
	// Ingress and Webhook need Kubernetes (ingress.go, webhook.go).
	Ingress *IngressConfig
	Webhook *WebhookConfig
	// LocalAgent runs a node agent in the same process: `certmesh dev` (dev.go).
	LocalAgent *LocalAgentConfig
	// Upstream, when set, signs the CA's intermediates (`--upstream`): the
	// CA holds no root key and its bundle is the upstream's. Run keeps the
	// downstream identity's SVID fresh.
	Upstream *upstream.Client
}

// NodesFile holds the node register (evictions, bans) in the state directory.
const NodesFile = "nodes.json"

// Server is the assembled control plane.
type Server struct {
	cfg    Config
	CA     *ca.CA
	Tokens *identity.JoinTokens
	// Nodes is the register of node agents: evictions and bans.
	Nodes *identity.Nodes
	// Leader runs leader-only work in Kubernetes mode (nil otherwise).
	Leader *leader.Leader

	lock     *store.Lock
	lis      net.Listener
	grpc     *grpc.Server
	agentAPI *service.AgentAPI
	acks     *service.AckRegistry
	kube     *kube
	regs     *registrations
	metrics  *prometheus.Registry // served on MetricsAddr
	edge     *edge.Manager
	ingress  *ingress.Controller
	local    *LocalAgent
	// runners run on every replica beside the built-in work.
	runners []func(context.Context) error
}

// New validates cfg and fills its defaults, takes the state directory's lock,
// opens (or creates) the CA and binds the gRPC listener, so that a second
// server on the same directory or port fails here with a clear error rather
// than later. It builds every part cfg asks for and starts nothing.
func New(cfg Config) (_ *Server, err error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	// With the in-process agent, its socket sits in the state directory by
	// default: every registered uid must reach it, so the directory (and any
	// parent created here, such as make run's .certmesh) is searchable.
	// Keys and tokens stay in 0700 and 0600 places inside, so searching the
	// directory reveals nothing.
	dirMode := os.FileMode(0o700)
	if cfg.LocalAgent != nil {
		dirMode = 0o711
	}
	if err := os.MkdirAll(cfg.Dir, dirMode); err != nil {
		return nil, fmt.Errorf("server: state directory: %w", err)
	}
	if cfg.LocalAgent != nil {
		if err := store.MakeSearchable(cfg.Dir); err != nil {
			return nil, fmt.Errorf("server: state directory: %w", err)
		}
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
	for _, step := range []func() error{
		s.setupMetrics, s.openRegistrations, s.kubernetesClients, s.openCA, s.setupKubernetes,
		s.openTokens, s.buildGRPC, s.listen, s.buildEdge, s.buildIngress, s.buildWebhook, s.buildLocalAgent,
	} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	s.followRegistrations()
	s.serveMetrics()
	return s, nil
}

// withDefaults fills the defaults and checks what goes together.
func (c *Config) withDefaults() error {
	if c.Dir == "" || c.TrustDomain.IsZero() {
		return errors.New("server: Dir and TrustDomain are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	for _, n := range c.ServerDNSNames {
		if err := identity.ValidateDNSName(n); err != nil {
			return fmt.Errorf("server: serving DNS name %q: %w", n, err)
		}
	}
	if (c.Ingress != nil || c.Webhook != nil) && c.Kubernetes == nil {
		return errors.New("server: Ingress and Webhook need Kubernetes")
	}
	if c.Ingress != nil && c.Edge != nil {
		return errors.New("server: Ingress and Edge both serve HTTP-01 challenges: use one")
	}
	return nil
}

func (s *Server) openCA() error {
	caCfg := s.cfg.CA
	caCfg.Dir, caCfg.TrustDomain, caCfg.Clock, caCfg.Logger = filepath.Join(s.cfg.Dir, "ca"), s.cfg.TrustDomain, s.cfg.Clock, s.cfg.Logger
	if s.cfg.Kubernetes != nil {
		found, err := s.primeKubernetes(caCfg.Dir)
		if err != nil {
			return err
		}
		if caCfg.Import, err = s.pluginFirstImport(found, caCfg.Import); err != nil {
			return err
		}
	}
	if s.cfg.Upstream != nil {
		caCfg.Upstream = s.cfg.Upstream
		s.runners = append(s.runners, s.cfg.Upstream.Run)
	}
	var err error
	if s.CA, err = ca.New(caCfg); err != nil {
		return err
	}
	if s.cfg.Registerer != nil {
		if err := s.cfg.Registerer.Register(newCACollector(s.CA)); err != nil {
			return fmt.Errorf("server: metrics: %w", err)
		}
	}
	return nil
}

func (s *Server) openTokens() error {
	var err error
	s.Tokens, err = identity.NewJoinTokens(identity.JoinTokensConfig{
		TrustDomain: s.cfg.TrustDomain, Clock: s.cfg.Clock,
		Store: store.File{Path: filepath.Join(s.cfg.Dir, "join-tokens.json"), Perm: 0o600},
	})
	if err != nil {
		return err
	}
	s.Nodes, err = identity.NewNodes(identity.NodesConfig{
		TrustDomain: s.cfg.TrustDomain, Clock: s.cfg.Clock,
		Store: s.nodeStore(),
	})
	return err
}

func (s *Server) listen() error {
	var err error
	if s.lis, err = net.Listen("tcp", s.cfg.Listen); err != nil {
		return fmt.Errorf("server: listen %s: %w", s.cfg.Listen, err)
	}
	return nil
}

// Addr is the gRPC listener's address (useful with port 0).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// AdminSocket is the path of the admin socket.
func (s *Server) AdminSocket() string { return filepath.Join(s.cfg.Dir, admin.SocketName) }

// Run runs every part until ctx ends or one fails, then releases the
// listener and the lock.
func (s *Server) Run(ctx context.Context) error {
	defer s.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return service.Serve(ctx, s.grpc, s.lis) })
	g.Go(func() error { <-ctx.Done(); s.agentAPI.Stop(); return nil })
	s.runCA(ctx, g)
	g.Go(func() error { return admin.Serve(ctx, s.AdminSocket(), admin.Handler(adminAPI{s}, s.cfg.Logger)) })
	for _, run := range s.runners {
		g.Go(func() error { return run(ctx) })
	}
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

// buildGRPC puts the signing service, the agents' API and the bundle
// acknowledgements on one gRPC server, and gates CA rotation on the
// acknowledgements (cluster-wide in Kubernetes mode).
func (s *Server) buildGRPC() error {
	attestors := append(identity.Chain{s.Tokens}, s.cfg.Attestors...)
	if s.kube != nil && s.kube.attestor != nil {
		attestors = append(attestors, s.kube.attestor)
	}
	svc, err := service.New(service.Config{
		CA: s.CA, Attestor: attestors, Registry: s.cfg.Registrations, Nodes: s.Nodes, Logger: s.cfg.Logger,
		Metrics: service.NewMetrics(s.cfg.Registerer), Clock: s.cfg.Clock,
	})
	if err != nil {
		return err
	}
	s.grpc = service.NewGRPCServer(svc.TransportCredentials(s.servingCert().ServerTLSConfig()), grpc.UnaryInterceptor(svc.UnaryShedder()))
	svc.Register(s.grpc)
	s.agentAPI = svc.NewAgentAPI(s.CA)
	s.agentAPI.Register(s.grpc)
	s.acks = svc.NewAckRegistry()
	s.acks.Register(s.grpc)
	svc.NewUpstream(s.CA).Register(s.grpc)
	gate := s.acks.Gate
	if s.kube != nil {
		if gate, err = s.kubernetesAckGate(s.acks); err != nil {
			return err
		}
	}
	s.CA.SetRotationGate(func() (bool, int) { return gate(wire.BundleDigest(s.CA.Roots())) })
	return nil
}

// servingCert is the gRPC listener's certificate (servingNames).
func (s *Server) servingCert() *service.ServingCert {
	dns, ips := servingNames(s.cfg.Listen, s.cfg.ServerDNSNames)
	return &service.ServingCert{CA: s.CA, DNSNames: dns, IPAddresses: ips, Clock: s.cfg.Clock}
}

// servingNames are the names in the listener's certificate: localhost and
// the loopback IPs, the host of listen when it names one, then extra, each
// name once.
func servingNames(listen string, extra []string) ([]string, []net.IP) {
	dns, ips := []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if host, _, err := net.SplitHostPort(listen); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			ips = append(ips, ip)
		} else if ip == nil && host != "" {
			dns = append(dns, host)
		}
	}
	for _, n := range extra {
		if !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// GRPC exposes the gRPC server so that more services can share the listener.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Acks is the registry of agents' bundle acknowledgements (the rotation gate).
func (s *Server) Acks() *service.AckRegistry { return s.acks }
