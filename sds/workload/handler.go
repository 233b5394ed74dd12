// Package workload serves the SPIFFE Workload API (SpiffeWorkloadAPI from
// go-spiffe's proto/spiffe/workload) on top of the agent's SVID cache.
//
// The handler owns neither the socket nor the SVIDs: the agent gives it a
// Source (its cache) and an Attestor (who is calling), and registers it on a
// gRPC server whose listener uses identity.PeerCredentials, so every call
// carries the kernel-verified uid of the caller.
package workload

import (
	"context"
	"errors"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"k8s.io/utils/clock"

	"github.com/certmesh/certmesh/identity"
)

// Source is what the handler needs from the agent. It is declared here,
// where it is used, so that the agent's cache satisfies it without knowing
// about this package and tests can fake it.
type Source interface {
	// X509SVID returns the caller's current unexpired SVID, or false while
	// it has not been issued yet.
	X509SVID(id spiffeid.ID) (*x509svid.SVID, bool)
	// X509Bundle returns the X.509 bundle of the own trust domain.
	X509Bundle() *x509bundle.Bundle
	// JWTBundle returns the JWT bundle (the CA's JWT keys) of the own trust domain.
	JWTBundle() *jwtbundle.Bundle
	// FetchJWTSVID returns a JWT-SVID for id and audience, signed by the CA.
	FetchJWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (*jwtsvid.SVID, error)
	// Changed returns a channel closed when anything above may have
	// changed; call it again after it fires.
	Changed() <-chan struct{}
	// TrustDomain is the agent's trust domain.
	TrustDomain() spiffeid.TrustDomain
}

// Config configures a Handler.
type Config struct {
	// Source is the agent's SVID cache. Required.
	Source Source
	// Attestor decides which SPIFFE ID a caller gets from its peer
	// credentials (identity.PeerAttestor in certmesh dev). Required.
	Attestor identity.Attestor
	// Logger receives refusals and failures; default: discard.
	Logger *slog.Logger
	// Metrics are the handler's metrics; default: unregistered.
	Metrics *Metrics
	// Clock checks JWT-SVID expiry in ValidateJWTSVID; default: real.
	Clock clock.PassiveClock
	// Acks, if set, learns which bundle each X.509 stream holds.
	Acks BundleAcks
}

// Errors returned by New for an incomplete Config.
var (
	ErrNoSource   = errors.New("workload: Config.Source is required")
	ErrNoAttestor = errors.New("workload: Config.Attestor is required")
)

// Handler implements SpiffeWorkloadAPI. The WIT-SVID methods of the newer
// spec are left to the embedded Unimplemented server: nothing issues WITs yet.
type Handler struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer

	src     Source
	att     identity.Attestor
	log     *slog.Logger
	metrics *Metrics
	clock   clock.PassiveClock
	acks    BundleAcks
}

var _ workloadpb.SpiffeWorkloadAPIServer = (*Handler)(nil)

// New validates cfg and fills its defaults. It starts nothing: streams run
// in the goroutines gRPC gives each call.
func New(cfg Config) (*Handler, error) {
	if cfg.Source == nil {
		return nil, ErrNoSource
	}
	if cfg.Attestor == nil {
		return nil, ErrNoAttestor
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Acks == nil {
		cfg.Acks = noAcks{}
	}
	return &Handler{
		src:     cfg.Source,
		att:     cfg.Attestor,
		log:     cfg.Logger,
		metrics: cfg.Metrics,
		clock:   cfg.Clock,
		acks:    cfg.Acks,
	}, nil
}

// Register adds the Workload API to s. The server must have been built
// with identity.PeerCredentials, or every caller is refused.
//
// Streams end only when their client goes away or the server is stopped
// with Stop: GracefulStop waits for streaming calls, which never finish on
// their own, so a shutdown should fall back to Stop after a grace period.
func (h *Handler) Register(s *grpc.Server) {
	workloadpb.RegisterSpiffeWorkloadAPIServer(s, h)
}

// Method names, used as the "method" label and log attribute.
const (
	methodX509SVID    = "FetchX509SVID"
	methodX509Bundles = "FetchX509Bundles"
	methodJWTSVID     = "FetchJWTSVID"
	methodJWTBundles  = "FetchJWTBundles"
	methodValidateJWT = "ValidateJWTSVID"
)

// Log attribute keys.
const (
	attrMethod = "method"
	attrReason = "reason"
	attrError  = "error"
	attrID     = "spiffe_id"
)
