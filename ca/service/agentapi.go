package service

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/identity"
)

// AgentAPI serves agents the parts of the SPIFFE Workload API messages that
// a CA can answer: the X.509 and JWT bundles (streamed, so a rotation reaches
// every agent at once) and JWT-SVIDs. Reusing those messages on the CA's own
// listener spares a bespoke protocol: an agent is a workload of the CA.
type AgentAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	svc  *Service
	ca   Authority
	stop chan struct{}
	once sync.Once
}

// Authority is the part of the CA the agent API needs.
type Authority interface {
	Signer
	SignJWT(ca.JWTParams) (string, time.Time, error)
	JWTBundle() *jwtbundle.Bundle
	BundleChanged() <-chan struct{}
}

var _ Authority = (*ca.CA)(nil)

// NewAgentAPI serves bundles and JWT-SVIDs from a, authenticating callers
// as the signing service does.
func (s *Service) NewAgentAPI(a Authority) *AgentAPI {
	return &AgentAPI{svc: s, ca: a, stop: make(chan struct{})}
}

// Stop ends every bundle stream, so that a graceful server stop does not
// wait on streams that would otherwise last as long as the agents.
func (a *AgentAPI) Stop() { a.once.Do(func() { close(a.stop) }) }

// Register adds the API to a gRPC server.
func (a *AgentAPI) Register(g *grpc.Server) { workloadpb.RegisterSpiffeWorkloadAPIServer(g, a) }

// FetchX509Bundles streams the trust bundle, again on every change.
func (a *AgentAPI) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	return a.streamBundle(stream.Context(), func(td string) error {
		var der []byte
		for _, r := range a.ca.Roots() {
			der = append(der, r.Raw...)
		}
		return stream.Send(&workloadpb.X509BundlesResponse{Bundles: map[string][]byte{td: der}})
	})
}

// FetchJWTBundles streams the JWT bundle (JWKS), again on every change.
func (a *AgentAPI) FetchJWTBundles(_ *workloadpb.JWTBundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	return a.streamBundle(stream.Context(), func(td string) error {
		jwks, err := a.ca.JWTBundle().Marshal()
		if err != nil {
			return a.svc.refuse(stream.Context(), err)
		}
		return stream.Send(&workloadpb.JWTBundlesResponse{Bundles: map[string][]byte{td: jwks}})
	})
}

// streamBundle sends the current bundle, then again at every change, until
// the client goes away or the server stops.
func (a *AgentAPI) streamBundle(ctx context.Context, send func(td string) error) error {
	for {
		changed := a.ca.BundleChanged()
		if err := send(a.ca.TrustDomain().IDString()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.stop:
			return status.Error(codes.Unavailable, "server shutting down")
		case <-changed:
		}
	}
}

// FetchJWTSVID signs a JWT-SVID for the caller, or — for a node agent — for
// a registered workload named in spiffe_id.
func (a *AgentAPI) FetchJWTSVID(ctx context.Context, req *workloadpb.JWTSVIDRequest) (*workloadpb.JWTSVIDResponse, error) {
	caller, err := a.svc.authenticate(ctx)
	if err != nil {
		return nil, a.svc.refuse(ctx, err)
	}
	target := ""
	if req.GetSpiffeId() != "" && req.GetSpiffeId() != caller.ID.String() {
		target = req.GetSpiffeId()
	}
	grant, err := a.svc.grant(caller, target)
	if err != nil {
		return nil, a.svc.refuse(ctx, err)
	}
	token, _, err := a.ca.SignJWT(ca.JWTParams{ID: grant.ID, Audience: req.GetAudience()})
	if err != nil {
		return nil, a.svc.refuse(ctx, err)
	}
	a.svc.cfg.Metrics.issued.WithLabelValues(caller.Attestor + "_jwt").Inc()
	return &workloadpb.JWTSVIDResponse{Svids: []*workloadpb.JWTSVID{{SpiffeId: grant.ID.String(), Svid: token}}}, nil
}

// isNode reports whether id is a node agent's identity: only node agents
// may ask for the certificates of the workloads registered with the server.
func isNode(id spiffeid.ID) bool { return strings.HasPrefix(id.Path(), identity.NodePathPrefix) }
