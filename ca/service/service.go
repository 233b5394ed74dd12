// Package service serves the CA over gRPC with the protocol Istio's agents
// already speak: istio.v1.auth.IstioCertificateService/CreateCertificate.
// A caller authenticates with a bearer token (join token, later a Kubernetes
// ServiceAccount token) or, to renew, with its current X.509-SVID over mTLS.
package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	pb "istio.io/api/security/v1alpha1"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
)

// Signer is the part of the CA the service needs.
type Signer interface {
	Sign(ca.SignParams) (*ca.Leaf, error)
	Roots() []*x509.Certificate
	TrustDomain() spiffeid.TrustDomain
}

// Registry tells which registered identities exist and their DNS names.
// *identity.Registrations and *identity.RegistrationsFile satisfy it.
type Registry interface {
	ByID(spiffeid.ID) (identity.Entry, bool)
}

var (
	_ Signer   = (*ca.CA)(nil)
	_ Registry = (*identity.Registrations)(nil)
	_ Registry = (*identity.RegistrationsFile)(nil)
)

// NodeRegister knows which node agents were evicted or banned.
// *identity.Nodes implements it.
type NodeRegister interface {
	Check(id spiffeid.ID, issuedAt time.Time) (known bool, err error)
	Joined(id spiffeid.ID) error
}

var _ NodeRegister = (*identity.Nodes)(nil)

// Config configures the service. CA is required; Attestor checks bearer
// tokens; Registry may be nil (no DNS names, no node agents); Nodes may be
// nil (no evictions).
type Config struct {
	CA       Signer
	Attestor identity.Attestor
	Registry Registry
	Nodes    NodeRegister
	Metrics  *Metrics
	Logger   *slog.Logger
	Clock    clock.PassiveClock
	// MaxInFlight and QueueWait bound concurrent signing (load shedding).
	MaxInFlight int
	QueueWait   time.Duration
}

// Service implements IstioCertificateService.
type Service struct {
	pb.UnimplementedIstioCertificateServiceServer
	cfg   Config
	limit *limiter
	// acks spares workload agents' heartbeats a TokenReview each.
	acks ackTokens
}

// New checks cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.CA == nil {
		return nil, errors.New("service: config: CA is required")
	}
	if cfg.Attestor == nil {
		cfg.Attestor = identity.Chain(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = DefaultQueueWait
	}
	return &Service{cfg: cfg, limit: newLimiter(cfg.MaxInFlight, cfg.QueueWait)}, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(g *grpc.Server) { pb.RegisterIstioCertificateServiceServer(g, s) }

// CreateCertificate authenticates the caller, checks the CSR against what the
// caller may have, signs, and answers the chain leaf first, root last.
func (s *Service) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	caller, err := s.authenticate(ctx)
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	grant, err := s.grantFor(caller, req)
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	csr, err := ca.ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	params, err := ca.AuthorizeCSR(csr, grant, req.GetValidityDuration())
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	start := s.cfg.Clock.Now()
	leaf, err := s.cfg.CA.Sign(params)
	if err != nil {
		return nil, s.refuse(ctx, err)
	}
	s.cfg.Metrics.signing.Observe(s.cfg.Clock.Since(start).Seconds())
	s.cfg.Metrics.issued.WithLabelValues(caller.Attestor).Inc()
	s.cfg.Logger.Debug("issued SVID", attrID, grant.ID.String(), attrAttestor, caller.Attestor, "not_after", leaf.NotAfter)
	return &pb.IstioCertificateResponse{CertChain: leaf.ChainPEM()}, nil
}

// Log attribute keys.
const (
	attrID       = "spiffe_id"
	attrAttestor = "attestor"
	attrReason   = "reason"
	attrError    = "error"
)

// authenticate finds who is calling, and decides from what holds now, not
// from what held when a credential was issued: a bearer token is attested
// afresh (a deleted pod, an excluded ServiceAccount, a spent join token are
// refused), and an SVID alone is only as good as its grant today
// (reauthorize). An agent renewing with its certificate never needs its
// token again, unless its identity comes from one (Kubernetes).
func (s *Service) authenticate(ctx context.Context) (identity.Identity, error) {
	p, mtls := peerSVID(ctx)
	mtls = mtls && p.Presented
	token, err := bearerToken(ctx)
	if mtls && errors.Is(err, errNoCredential) {
		return s.authenticateSVID(p)
	}
	if err != nil {
		return identity.Identity{}, err
	}
	id, err := s.cfg.Attestor.Attest(ctx, identity.Credential{BearerToken: token})
	if err != nil {
		return identity.Identity{}, errors.Join(errUnauthenticated, err)
	}
	if mtls && p.Err == nil && p.ID != id.ID {
		return identity.Identity{}, fmt.Errorf("%w: SVID %s, token %s", errCredentialsDisagree, p.ID, id.ID)
	}
	if s.cfg.Nodes != nil && id.Attestor == identity.AttestorJoinToken {
		if err := s.cfg.Nodes.Joined(id.ID); err != nil {
			return identity.Identity{}, err
		}
	}
	return id, nil
}

// authenticateSVID uses the per-connection verification; the expiry is
// checked again per request because a connection can outlive its SVID.
func (s *Service) authenticateSVID(p PeerSVID) (identity.Identity, error) {
	if p.Err != nil {
		return identity.Identity{}, errors.Join(errUnauthenticated, errBadClientSVID, p.Err)
	}
	if !s.cfg.Clock.Now().Before(p.NotAfter) {
		return identity.Identity{}, errors.Join(errUnauthenticated, errBadClientSVID, errExpiredSVID)
	}
	return s.reauthorize(p)
}

// reauthorize grants an SVID holder its identity only while something
// still grants it: a node agent (or an identity that joined with a token)
// that is not evicted or banned, or a registration entry that still
// exists. Removing an entry, evicting a node, or an identity that came
// from a ServiceAccount token (which must be presented again) cannot be
// renewed by holding an old SVID and its key.
func (s *Service) reauthorize(p PeerSVID) (identity.Identity, error) {
	ident := identity.Identity{ID: p.ID, Attestor: "x509_svid"}
	if identity.IsReserved(p.ID) && !identity.IsNode(p.ID) && !identity.IsDownstream(p.ID) {
		return identity.Identity{}, fmt.Errorf("%w: %s presented as a client", identity.ErrReservedID, p.ID)
	}
	joined := identity.IsNode(p.ID)
	if s.cfg.Nodes != nil {
		known, err := s.cfg.Nodes.Check(p.ID, p.IssuedAt)
		if err != nil {
			return identity.Identity{}, err
		}
		joined = joined || known
	}
	if s.cfg.Registry != nil {
		if e, ok := s.cfg.Registry.ByID(p.ID); ok {
			ident.DNSNames = e.DNSNames
			return ident, nil
		}
	}
	if joined {
		return ident, nil
	}
	return identity.Identity{}, fmt.Errorf("%w: %s (renew with the credential it was attested from)", errNotGranted, p.ID)
}

// grantFor decides which identity to sign: the caller's own, or — for a node
// agent — a registered workload's, named in ImpersonatedIdentity.
func (s *Service) grantFor(caller identity.Identity, req *pb.IstioCertificateRequest) (ca.CSRGrant, error) {
	return s.grant(caller, impersonated(req))
}

// grant applies the impersonation rule: only node identities, only for
// identities registered with the server, and only on the nodes a registration
// lists (when it lists any).
func (s *Service) grant(caller identity.Identity, target string) (ca.CSRGrant, error) {
	if target == "" {
		return ca.CSRGrant{ID: caller.ID, AllowedDNS: caller.DNSNames}, nil
	}
	if !isNode(caller.ID) {
		return ca.CSRGrant{}, errImpersonationDenied
	}
	id, err := spiffeid.FromString(target)
	if err != nil {
		return ca.CSRGrant{}, errors.Join(errBadImpersonation, err)
	}
	if s.cfg.Registry == nil {
		return ca.CSRGrant{}, errImpersonationDenied
	}
	e, ok := s.cfg.Registry.ByID(id)
	if !ok {
		return ca.CSRGrant{}, errImpersonationDenied
	}
	if !e.OnNode(caller.ID) {
		return ca.CSRGrant{}, fmt.Errorf("%w: %s asked for %s (registrations line %d)", errOtherNode, caller.ID, id, e.Line)
	}
	return ca.CSRGrant{ID: id, AllowedDNS: e.DNSNames}, nil
}

func impersonated(req *pb.IstioCertificateRequest) string {
	if md := req.GetMetadata(); md != nil {
		if v, ok := md.GetFields()[wire.ImpersonatedIdentityKey]; ok {
			return v.GetStringValue()
		}
	}
	return ""
}

func peerSVID(ctx context.Context) (PeerSVID, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PeerSVID{}, false
	}
	info, ok := p.AuthInfo.(PeerSVID)
	return info, ok
}

// MaxTokenBytes bounds a bearer token: a Kubernetes token is a few KiB.
const MaxTokenBytes = 16 << 10

func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(wire.AuthorizationKey)
	if len(vals) == 0 {
		return "", errNoCredential
	}
	if len(vals) > 1 {
		return "", errBadAuthHeader
	}
	v := vals[0]
	if len(v) > MaxTokenBytes {
		return "", errTokenTooLarge
	}
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", errBadAuthHeader
	}
	return strings.TrimSpace(v[len(prefix):]), nil
}

// trustSource serves the CA's current roots to x509svid.Verify, for the CA's
// own trust domain only: a client SVID from elsewhere fails verification.
type trustSource struct {
	td    spiffeid.TrustDomain
	roots []*x509.Certificate
}

func (t trustSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundleT, error) {
	if td != t.td {
		return nil, errForeignTrustDomain
	}
	return newBundle(t.td, t.roots), nil
}
