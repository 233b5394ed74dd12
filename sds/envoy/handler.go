package envoy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/identity"
)

// DefaultMaxResourceNames bounds the names of one request. Envoy asks for
// one or two per stream; a hundred leaves room for a gateway with many edge
// certificates on one stream while refusing requests built to exhaust us.
const DefaultMaxResourceNames = 100

// Log attribute keys, constant so that log queries keep working.
const (
	attrSPIFFEID = "spiffe_id"
	attrNames    = "resource_names"
	attrVersion  = "version"
	attrNonce    = "nonce"
	attrError    = "error"
	attrCount    = "count"
	attrReason   = "reason"
)

// Source is what the handler needs from the agent. It is declared here,
// where it is used, so the agent's cache satisfies it without importing SDS.
type Source interface {
	// X509SVID returns the caller's current unexpired SVID, or false while
	// it has not been fetched yet.
	X509SVID(id spiffeid.ID) (*x509svid.SVID, bool)
	// X509Bundle returns the trust bundle of the own trust domain.
	X509Bundle() *x509bundle.Bundle
	// EdgeCertificate returns an ACME edge certificate by name.
	EdgeCertificate(name string) (certPEM, keyPEM []byte, ok bool)
	// Changed returns a channel closed when anything above may have
	// changed; call it again after it fires.
	Changed() <-chan struct{}
	// TrustDomain is the agent's own trust domain.
	TrustDomain() spiffeid.TrustDomain
}

// Config configures a Handler.
type Config struct {
	Source   Source
	Attestor identity.Attestor
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Metrics defaults to an unregistered set.
	Metrics *Metrics
	// MaxResourceNames defaults to DefaultMaxResourceNames.
	MaxResourceNames int
	// Acks, if set, learns which bundle each stream's Envoy accepted.
	Acks BundleAcks
	// Rand is the source of response nonces; defaults to crypto/rand. It
	// must be safe for concurrent use: streams draw from it in parallel.
	Rand io.Reader
}

// Handler implements envoy.service.secret.v3.SecretDiscoveryService. It keeps
// no state across streams: each stream attests its caller once and holds its
// own version, nonce and what it last sent.
type Handler struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer

	src      Source
	attestor identity.Attestor
	log      *slog.Logger
	metrics  *Metrics
	maxNames int
	cache    encodeCache
	acks     BundleAcks

	rand io.Reader
	// fan delivers source changes to the open streams through at most
	// pushWorkers goroutines at a time.
	fan         fanout
	pushWorkers int
}

var _ secretv3.SecretDiscoveryServiceServer = (*Handler)(nil)

// New validates cfg and fills in defaults. It starts nothing: streams run
// on the goroutines gRPC gives them, and the fan-out that pushes changes
// runs only while streams are open.
func New(cfg Config) (*Handler, error) {
	if cfg.Source == nil {
		return nil, errors.New("envoy: config: Source is required")
	}
	if cfg.Attestor == nil {
		return nil, errors.New("envoy: config: Attestor is required")
	}
	if cfg.MaxResourceNames < 0 {
		return nil, fmt.Errorf("envoy: config: MaxResourceNames %d is negative", cfg.MaxResourceNames)
	}
	if cfg.Acks == nil {
		cfg.Acks = noAcks{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	h := &Handler{src: cfg.Source, attestor: cfg.Attestor, log: cfg.Logger, metrics: cfg.Metrics, maxNames: cfg.MaxResourceNames, acks: cfg.Acks,
		rand: cfg.Rand, pushWorkers: defaultPushWorkers()}
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if h.metrics == nil {
		m, err := NewMetrics(nil)
		if err != nil {
			return nil, err
		}
		h.metrics = m
	}
	if h.maxNames == 0 {
		h.maxNames = DefaultMaxResourceNames
	}
	return h, nil
}

// defaultPushWorkers sizes the fan-out pool. A push is CPU work (look up,
// encode, hand to gRPC) that never waits on a client, so a few workers per
// core keep every core busy during a rotation while the streams' own
// goroutines, woken by the ACKs, compete for the same cores. Pools of 4 to
// 64 workers measured alike on 2 cores at 10,000 streams
// (BenchmarkRotationFanout).
func defaultPushWorkers() int {
	return 4 * runtime.GOMAXPROCS(0)
}

// Register adds the service to s.
func (h *Handler) Register(s *grpc.Server) {
	secretv3.RegisterSecretDiscoveryServiceServer(s, h)
}

// DeltaSecrets is not offered: Envoy falls back to StreamSecrets when the
// bootstrap asks for GRPC rather than DELTA_GRPC, and a second protocol
// would double the surface for no gain at one or two secrets per stream.
func (h *Handler) DeltaSecrets(secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	return status.Error(codes.Unimplemented, "envoy: DeltaSecrets is not implemented, use StreamSecrets")
}

// attest proves who the caller is from its peer credentials. Any failure
// becomes one opaque status with the refusal's code (PermissionDenied): the
// detail and reason are logged, not returned, and a caller is never given a
// fallback identity.
func (h *Handler) attest(ctx context.Context) (identity.Identity, error) {
	ident, err := identity.AttestPeer(ctx, h.attestor, h.src.TrustDomain())
	if err != nil {
		code, reason := codes.PermissionDenied, "internal"
		if r, ok := identity.RefusalOf(err); ok {
			code, reason = r.Code(), r.Reason()
		}
		h.log.WarnContext(ctx, "envoy: attestation failed", attrReason, reason, attrError, err)
		h.metrics.refused.WithLabelValues(reasonAttestation).Inc()
		return identity.Identity{}, status.Error(code, "envoy: caller could not be attested")
	}
	return ident, nil
}

// refuse converts a request error into a gRPC status once, at the boundary:
// it logs and counts the detail and returns a status that names only what
// the caller itself sent.
func (h *Handler) refuse(ctx context.Context, log *slog.Logger, err error) error {
	switch {
	case errors.Is(err, ErrUnknownResource):
		log.WarnContext(ctx, "envoy: unknown resource requested", attrError, err)
		h.metrics.unknown.Inc()
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrForbiddenResource):
		log.WarnContext(ctx, "envoy: resource refused", attrError, err)
		h.metrics.refused.WithLabelValues(reasonForbidden).Inc()
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrInvalidRequest):
		log.WarnContext(ctx, "envoy: invalid request", attrError, err)
		h.metrics.refused.WithLabelValues(reasonInvalid).Inc()
		return status.Error(codes.InvalidArgument, err.Error())
	default:
		log.ErrorContext(ctx, "envoy: internal error", attrError, err)
		return status.Error(codes.Internal, "envoy: internal error")
	}
}
