package service

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"

	"google.golang.org/grpc"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
)

// DownstreamSigner is the part of the CA an upstream authority needs.
type DownstreamSigner interface {
	SignDownstream(ca.DownstreamParams) (ca.UpstreamResponse, error)
}

var _ DownstreamSigner = (*ca.CA)(nil)

// errNotDownstream: the caller is not a downstream certmesh server.
var errNotDownstream = errors.New("service: only downstream servers (" + identity.DownstreamPathPrefix + "…) may have an intermediate signed")

// Upstream serves wire's upstream authority service: downstream certmesh
// servers have their intermediates signed by this server's root.
type Upstream struct {
	svc *Service
	ca  DownstreamSigner
}

// NewUpstream serves downstream servers with signer, authenticating and
// refusing like CreateCertificate (same metrics, same log).
func (s *Service) NewUpstream(signer DownstreamSigner) *Upstream {
	return &Upstream{svc: s, ca: signer}
}

// Register adds the upstream authority service to g.
func (u *Upstream) Register(g *grpc.Server) { wire.RegisterUpstream(g, u.sign) }

// sign authenticates the caller afresh (a token is attested, an SVID
// re-authorized: an evicted or banned downstream is refused), admits only
// downstream identities, and signs a CA certificate constrained to the
// trust domain the caller's name grants.
func (u *Upstream) sign(ctx context.Context, req wire.IntermediateRequest) (wire.IntermediateResponse, error) {
	caller, err := u.svc.authenticate(ctx)
	if err != nil {
		return wire.IntermediateResponse{}, u.svc.refuse(ctx, err)
	}
	if !identity.IsDownstream(caller.ID) {
		return wire.IntermediateResponse{}, u.svc.refuse(ctx, fmt.Errorf("%w: %s (%s)", errNotDownstream, caller.ID, caller.Attestor))
	}
	td, err := identity.DownstreamTrustDomain(caller.ID)
	if err != nil {
		return wire.IntermediateResponse{}, u.svc.refuse(ctx, err)
	}
	csr, err := ca.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR}))
	if err != nil {
		return wire.IntermediateResponse{}, u.svc.refuse(ctx, err)
	}
	resp, err := u.ca.SignDownstream(ca.DownstreamParams{CSR: csr, TrustDomain: td, TTL: req.TTL})
	if err != nil {
		return wire.IntermediateResponse{}, u.svc.refuse(ctx, err)
	}
	u.svc.cfg.Metrics.issued.WithLabelValues(attestorDownstream).Inc()
	u.svc.cfg.Logger.Info("signed a downstream intermediate", attrID, caller.ID.String(), "trust_domain", td.Name(),
		"not_after", resp.Chain[0].NotAfter)
	return wire.IntermediateResponse{Chain: resp.Chain, Roots: resp.Roots}, nil
}

// attestorDownstream labels intermediates in the issued counter.
const attestorDownstream = "downstream_intermediate"
