package identity

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
)

// Refusals of AttestPeer, for the agent's socket. Every one is
// PermissionDenied: the kernel, not the caller, chose the credential, so
// the caller has nothing else to present.
var (
	// ErrNoPeerCredentials: the call carries no peer credentials (the
	// server was not built with PeerCredentials).
	ErrNoPeerCredentials = NewRefusal(codes.PermissionDenied, "no_peer_credentials", "identity: no peer credentials on connection (server not built with identity.PeerCredentials?)")
	// ErrAttestationFailed: the attestor could not say who the caller is.
	ErrAttestationFailed = NewRefusal(codes.PermissionDenied, "attestation_failed", "identity: attestation failed")
	// ErrForeignTrustDomain: the caller was attested into another trust
	// domain than the one served.
	ErrForeignTrustDomain = NewRefusal(codes.PermissionDenied, "foreign_trust_domain", "identity: attested ID outside the served trust domain")
)

// AttestPeer proves who the caller of a unix-socket call is from its peer
// credentials, and checks that its ID is in td. It is the one check the
// agent's APIs (Envoy SDS, Workload API) make before serving anything.
//
// Every error is a Refusal: ErrNoPeerCredentials, ErrForeignTrustDomain,
// the attestor's own refusal when it knows the caller but refuses it
// (PermissionDenied, such as ErrNoRegistration), or else
// ErrAttestationFailed — an attestor that did not apply, could not decide
// or broke has not attested the caller.
func AttestPeer(ctx context.Context, a Attestor, td spiffeid.TrustDomain) (Identity, error) {
	pc, ok := PeerCredFromContext(ctx)
	if !ok {
		return Identity{}, ErrNoPeerCredentials
	}
	id, err := a.Attest(ctx, Credential{Peer: &pc})
	if err != nil {
		if r, ok := RefusalOf(err); ok && r.Code() == codes.PermissionDenied {
			return Identity{}, fmt.Errorf("identity: attest %s: %w", pc, err)
		}
		return Identity{}, fmt.Errorf("%w: %s: %w", ErrAttestationFailed, pc, err)
	}
	if !id.ID.MemberOf(td) {
		return Identity{}, fmt.Errorf("%w: %s for %s, serving %s", ErrForeignTrustDomain, id.ID, pc, td.Name())
	}
	return id, nil
}
