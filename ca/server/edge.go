package server

import (
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/ingress"
)

// buildEdge makes the edge manager when cfg.Edge asks for public ACME
// certificates: kept in Dir/edge, exported as metrics, listed in Status and,
// in dev mode, served by the local agent over SDS.
func (s *Server) buildEdge() error {
	if s.cfg.Edge == nil {
		return nil
	}
	ec := *s.cfg.Edge
	if ec.Dir == "" {
		ec.Dir = filepath.Join(s.cfg.Dir, "edge")
	}
	if ec.Logger == nil {
		ec.Logger = s.cfg.Logger
	}
	if ec.OrderMetrics == nil {
		ec.OrderMetrics = edge.NewOrderMetrics(s.cfg.Registerer)
	}
	m, err := edge.New(ec)
	if err != nil {
		return err
	}
	if s.cfg.Registerer != nil {
		if err := s.cfg.Registerer.Register(edge.NewCollector(m.Status)); err != nil {
			return fmt.Errorf("edge metrics: %w", err)
		}
	}
	s.edge = m
	s.runners = append(s.runners, m.Run)
	return nil
}

// edgeSource adapts the edge manager to what the agent serves over SDS.
type edgeSource struct{ m *edge.Manager }

func (e edgeSource) EdgeCertificate(name string) ([]byte, []byte, bool) {
	c, ok := e.m.Lookup(name)
	if !ok {
		return nil, nil, false
	}
	return c.CertPEM, c.KeyPEM, true
}

func (e edgeSource) Changed() <-chan struct{} { return e.m.Changed() }

// IngressConfig obtains ACME certificates for annotated Ingresses (and
// Gateways) on the leader replica; it needs Kubernetes.
type IngressConfig struct {
	// GatewayAPI also serves annotated Gateway API Gateways, with a client
	// made from Kubernetes.REST, once the Gateway API CRDs are served.
	GatewayAPI bool
	// SelfCheck fetches each HTTP-01 challenge through the ingress before the
	// CA validates it (off where the cluster cannot reach its public names).
	SelfCheck bool
	// SolverPodIP is this pod's IP: the challenge Service sends the ACME CA there.
	SolverPodIP string
	// HTTP01Addr is where the HTTP-01 responder listens; DNSProviders builds
	// DNS-01 providers by name (default: edge's built-in ones).
	HTTP01Addr   string
	DNSProviders edge.DNSProviderFactory
}

// buildIngress makes the Ingress certificate controller and gives it to the leader.
func (s *Server) buildIngress() error {
	ic := s.cfg.Ingress
	if ic == nil {
		return nil
	}
	k := s.cfg.Kubernetes
	var check *http.Client
	if ic.SelfCheck {
		check = &http.Client{Timeout: 5 * time.Second}
	}
	var gateways gatewayclient.Interface
	if ic.GatewayAPI && k.REST != nil {
		var err error
		if gateways, err = gatewayclient.NewForConfig(k.REST); err != nil {
			return fmt.Errorf("server: gateway API: %w", err)
		}
	}
	ctrl, err := ingress.New(ingress.Config{
		SelfCheck: check, Gateways: gateways,
		Client: k.Client, Namespace: k.Namespace, SolverPodIP: ic.SolverPodIP,
		ReportingInstance: k.Identity, Logger: s.cfg.Logger,
		Edge: edge.Config{HTTP01Addr: ic.HTTP01Addr, DNSProviders: ic.DNSProviders},
	})
	if err != nil {
		return fmt.Errorf("server: ingress: %w", err)
	}
	s.ingress = ctrl
	return s.Leader.Add("ingress-certificates", ctrl.Run)
}
