package workload

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/identity"
)

// securityHeader must be present with the value "true" on every call. The
// spec requires it so that a browser or an SSRF-prone proxy tricked into
// talking to the socket cannot fetch SVIDs: it cannot set the header.
const securityHeader = "workload.spiffe.io"

// Reasons a call is refused. They are matched with errors.Is and never
// reach the caller: the caller sees the refusal's public message.
var (
	errMissingHeader      = errors.New("workload: security header missing")
	errNoPeerCred         = errors.New("workload: no peer credentials on connection (server not built with identity.PeerCredentials?)")
	errAttestation        = errors.New("workload: attestation failed")
	errForeignTrustDomain = errors.New("workload: attested ID outside the agent's trust domain")
	errBadAudience        = errors.New("workload: audience must be 1 to 16 non-empty strings")
	errBadSPIFFEID        = errors.New("workload: requested SPIFFE ID is malformed")
	errNotCallerID        = errors.New("workload: requested SPIFFE ID is not the caller's")
	errJWTUnavailable     = errors.New("workload: JWT-SVID cannot be issued")
	errMissingValidate    = errors.New("workload: audience and svid are required")
	errNoJWTBundle        = errors.New("workload: no JWT bundle yet")
	errInvalidJWT         = errors.New("workload: JWT-SVID failed validation")
	errJWTExpired         = errors.New("workload: JWT-SVID expired")
)

// refusal is how one kind of error is shown: a gRPC code, a stable reason
// for logs and metrics, and a message that tells the caller what to fix
// without internal detail.
type refusal struct {
	match   error
	code    codes.Code
	reason  string
	message string
}

var refusals = []refusal{
	{errMissingHeader, codes.InvalidArgument, "missing_header", "security header missing from request"},
	{errNoPeerCred, codes.PermissionDenied, "no_peer_credentials", "caller could not be attested"},
	{identity.ErrNoRegistration, codes.PermissionDenied, "no_registration", "no identity issued to caller"},
	{errAttestation, codes.PermissionDenied, "attestation_failed", "caller could not be attested"},
	{errForeignTrustDomain, codes.PermissionDenied, "foreign_trust_domain", "no identity issued to caller"},
	{errBadAudience, codes.InvalidArgument, "bad_audience", "audience must be 1 to 16 non-empty strings"},
	{errBadSPIFFEID, codes.InvalidArgument, "bad_spiffe_id", "spiffe_id is not a valid SPIFFE ID"},
	{errNotCallerID, codes.PermissionDenied, "not_caller_id", "spiffe_id is not the caller's identity"},
	{errJWTUnavailable, codes.Unavailable, "jwt_unavailable", "JWT-SVID cannot be issued right now"},
	{errMissingValidate, codes.InvalidArgument, "missing_argument", "audience and svid must be specified"},
	{errNoJWTBundle, codes.Unavailable, "no_jwt_bundle", "JWT bundle not available yet"},
	{errInvalidJWT, codes.InvalidArgument, "invalid_jwt_svid", "JWT-SVID is not valid"},
	{errJWTExpired, codes.InvalidArgument, "jwt_svid_expired", "JWT-SVID is not valid"},
}

// refuse logs the detail of err, counts its reason and returns the opaque
// status the caller sees. Errors without a refusal entry are Internal.
func (h *Handler) refuse(method string, err error) error {
	for _, r := range refusals {
		if errors.Is(err, r.match) {
			h.metrics.refused.WithLabelValues(r.reason).Inc()
			h.log.Warn("refused workload API call", attrMethod, method, attrReason, r.reason, attrError, err.Error())
			return status.Error(r.code, r.message)
		}
	}
	return h.internal(method, err)
}

// internal logs an unexpected failure and returns an opaque Internal status.
func (h *Handler) internal(method string, err error) error {
	h.metrics.refused.WithLabelValues("internal").Inc()
	h.log.Error("workload API call failed", attrMethod, method, attrError, err.Error())
	return status.Error(codes.Internal, "internal error")
}

// authorize checks the security header and attests the caller. Every
// method calls it first, so no data leaves the handler before the caller
// is known to have an identity of its own.
func (h *Handler) authorize(ctx context.Context, method string) (identity.Identity, error) {
	if !hasSecurityHeader(ctx) {
		return identity.Identity{}, h.refuse(method, errMissingHeader)
	}
	cred, ok := identity.PeerCredFromContext(ctx)
	if !ok {
		return identity.Identity{}, h.refuse(method, errNoPeerCred)
	}
	id, err := h.att.Attest(ctx, identity.Credential{Peer: &cred})
	if err != nil {
		if ctx.Err() != nil {
			return identity.Identity{}, status.FromContextError(ctx.Err()).Err()
		}
		return identity.Identity{}, h.refuse(method, fmt.Errorf("%w: %s: %w", errAttestation, cred, err))
	}
	if !id.ID.MemberOf(h.src.TrustDomain()) {
		return identity.Identity{}, h.refuse(method, fmt.Errorf("%w: %s for %s", errForeignTrustDomain, id.ID, cred))
	}
	return id, nil
}

// hasSecurityHeader reports whether the call carries exactly one
// "workload.spiffe.io: true", as SPIRE's agent requires.
func hasSecurityHeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	v := md.Get(securityHeader)
	return len(v) == 1 && v[0] == "true"
}
