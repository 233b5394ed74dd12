package workload

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/identity"
)

// securityHeader must be present with the value "true" on every call. The
// spec requires it so that a browser or an SSRF-prone proxy tricked into
// talking to the socket cannot fetch SVIDs: it cannot set the header.
const securityHeader = "workload.spiffe.io"

// Reasons a call is refused, besides the caller's attestation (see
// identity.AttestPeer). They are matched with errors.Is and never reach the
// caller: the caller sees the refusal's public message.
var (
	errMissingHeader   = errors.New("workload: security header missing")
	errBadAudience     = errors.New("workload: audience must be 1 to 16 non-empty strings")
	errBadSPIFFEID     = errors.New("workload: requested SPIFFE ID is malformed")
	errNotCallerID     = errors.New("workload: requested SPIFFE ID is not the caller's")
	errJWTUnavailable  = errors.New("workload: JWT-SVID cannot be issued")
	errMissingValidate = errors.New("workload: audience and svid are required")
	errNoJWTBundle     = errors.New("workload: no JWT bundle yet")
	errInvalidJWT      = errors.New("workload: JWT-SVID failed validation")
	errJWTExpired      = errors.New("workload: JWT-SVID expired")
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
// status the caller sees: the handler's own refusals by the table above,
// attestation refusals by the code and reason they carry
// (identity.RefusalOf). Other errors are Internal.
func (h *Handler) refuse(method string, err error) error {
	for _, r := range refusals {
		if errors.Is(err, r.match) {
			return h.refused(method, r.code, r.reason, r.message, err)
		}
	}
	if r, ok := identity.RefusalOf(err); ok {
		return h.refused(method, r.Code(), r.Reason(), attestationMessage(err), err)
	}
	return h.internal(method, err)
}

func (h *Handler) refused(method string, code codes.Code, reason, message string, err error) error {
	h.metrics.refused.WithLabelValues(reason).Inc()
	h.log.Warn("refused workload API call", attrMethod, method, attrReason, reason, attrError, err.Error())
	return status.Error(code, message)
}

// attestationMessage tells a refused caller whether it could not be
// attested at all, or was attested and given no identity here.
func attestationMessage(err error) string {
	if errors.Is(err, identity.ErrNoRegistration) || errors.Is(err, identity.ErrForeignTrustDomain) {
		return "no identity issued to caller"
	}
	return "caller could not be attested"
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
	id, err := identity.AttestPeer(ctx, h.att, h.src.TrustDomain())
	if err != nil {
		if ctx.Err() != nil {
			return identity.Identity{}, status.FromContextError(ctx.Err()).Err()
		}
		return identity.Identity{}, h.refuse(method, err)
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
