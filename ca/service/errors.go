package service

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
)

type x509bundleT = x509bundle.Bundle

func newBundle(td spiffeid.TrustDomain, roots []*x509.Certificate) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, roots)
}

// Errors specific to the gRPC boundary.
var (
	errUnauthenticated     = errors.New("service: caller not authenticated")
	errNoCredential        = errors.New("service: no client certificate and no bearer token")
	errBadAuthHeader       = errors.New("service: authorization header is not a single bearer token")
	errTokenTooLarge       = errors.New("service: bearer token too large")
	errBadClientSVID       = errors.New("service: client certificate is not a valid SVID of this trust domain")
	errExpiredSVID         = errors.New("service: client SVID has expired")
	errTooManyAgents       = errors.New("service: too many agents reporting")
	errAckNoCredential     = errors.New("service: bundle acknowledgements need a node agent's SVID over mTLS or a pod's ServiceAccount token")
	errAckNotAgent         = errors.New("service: only node agents and workload-mode agents bound to a pod may report bundle acknowledgements")
	errForeignTrustDomain  = errors.New("service: foreign trust domain")
	errImpersonationDenied = errors.New("service: caller may not request another identity")
	errBadImpersonation    = errors.New("service: ImpersonatedIdentity is not a SPIFFE ID")
	errOtherNode           = errors.New("service: the registration is scoped to other node agents")
	errNotGranted          = errors.New("service: no registration or node grants this identity now")
	errCredentialsDisagree = errors.New("service: the client SVID and the bearer token name different identities")
)

// refusal maps one of the service's own errors (or the CA's) to the gRPC
// code and the stable reason label used in logs and metrics; attestation
// refusals carry both themselves (identity.Refusal). The returned status
// carries no detail: callers learn the code, operators read the log.
type refusal struct {
	match  error
	code   codes.Code
	reason string
}

var refusals = []refusal{
	{errNoCredential, codes.Unauthenticated, "no_credential"},
	{errBadAuthHeader, codes.Unauthenticated, "bad_auth_header"},
	{errTokenTooLarge, codes.Unauthenticated, "token_too_large"},
	{errBadClientSVID, codes.Unauthenticated, "bad_client_svid"},
	{errImpersonationDenied, codes.PermissionDenied, "impersonation_denied"},
	{errBadImpersonation, codes.InvalidArgument, "bad_impersonation"},
	{errOtherNode, codes.PermissionDenied, "impersonation_other_node"},
	{errNotGranted, codes.PermissionDenied, "not_granted"},
	{errCredentialsDisagree, codes.PermissionDenied, "credentials_disagree"},
	{ca.ErrCSRIdentity, codes.PermissionDenied, "csr_identity"},
	{ca.ErrCSRDNSNotAllowed, codes.PermissionDenied, "csr_dns"},
	{ca.ErrCSRNotPEM, codes.InvalidArgument, "csr_not_pem"},
	{ca.ErrCSRMalformed, codes.InvalidArgument, "csr_malformed"},
	{ca.ErrCSRSignature, codes.InvalidArgument, "csr_signature"},
	{ca.ErrCSRCurve, codes.InvalidArgument, "csr_curve"},
	{ca.ErrCSRRSAKey, codes.InvalidArgument, "csr_rsa_key"},
	{ca.ErrCSRTooLarge, codes.InvalidArgument, "csr_too_large"},
	{ca.ErrCSRTooManySANs, codes.InvalidArgument, "csr_too_many_sans"},
	{ca.ErrWeakKey, codes.InvalidArgument, "weak_key"},
	{ca.ErrUnsupportedKey, codes.InvalidArgument, "unsupported_key"},
	{ca.ErrBadTTL, codes.InvalidArgument, "bad_ttl"},
	{ca.ErrForeignID, codes.PermissionDenied, "foreign_id"},
	{ca.ErrJWTAudience, codes.InvalidArgument, "jwt_audience"},
	{ca.ErrAuthorityExpired, codes.Unavailable, "authority_expired"},
	{ca.ErrKeyUnavailable, codes.Unavailable, "hsm_unavailable"},
	{errAckNoCredential, codes.PermissionDenied, "ack_no_credential"},
	{errAckNotAgent, codes.PermissionDenied, "ack_not_agent"},
	{wire.ErrBadAckReport, codes.InvalidArgument, "bad_ack_report"},
	{errTooManyAgents, codes.ResourceExhausted, "too_many_agents"},
	{errNotDownstream, codes.PermissionDenied, "not_downstream"},
	{identity.ErrDownstreamName, codes.PermissionDenied, "downstream_name"},
	{ca.ErrDownstreamCSR, codes.InvalidArgument, "downstream_csr"},
	{ca.ErrDownstreamNoRoot, codes.FailedPrecondition, "downstream_no_root"},
	{errUnauthenticated, codes.Unauthenticated, "unauthenticated"},
}

// classify returns the code and reason for err: an attestor's refusal's
// own, else the table's; unknown errors are Internal.
func classify(err error) (codes.Code, string) {
	if r, ok := identity.RefusalOf(err); ok {
		return r.Code(), r.Reason()
	}
	for _, r := range refusals {
		if errors.Is(err, r.match) {
			return r.code, r.reason
		}
	}
	return codes.Internal, "internal"
}

// refuse logs the detail, counts the reason and returns an opaque status.
func (s *Service) refuse(ctx context.Context, err error) error {
	code, reason := classify(err)
	s.cfg.Metrics.refused.WithLabelValues(reason).Inc()
	s.cfg.Logger.Warn("refused certificate request", attrReason, reason, attrError, err.Error())
	return status.Error(code, messageFor(code))
}

func messageFor(c codes.Code) string {
	switch c {
	case codes.Unauthenticated:
		return "caller could not be authenticated"
	case codes.PermissionDenied:
		return "caller may not have the requested certificate"
	case codes.InvalidArgument:
		return "invalid certificate request"
	case codes.Unavailable:
		return "CA cannot sign right now"
	}
	return "internal error"
}
