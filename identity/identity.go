package identity

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
)

// Sentinel errors callers branch on with errors.Is. They are wrapped with
// detail, so compare with errors.Is, never by string. Each is a Refusal:
// it carries the gRPC code and the reason label it is reported with.
var (
	// ErrNotApplicable means the attestor does not understand the kind of
	// credential presented; a Chain moves on to the next attestor.
	ErrNotApplicable = NewRefusal(codes.Unauthenticated, "unsupported_credential", "identity: credential not applicable to attestor")
	// ErrUnknownToken means a join token was never issued (or was pruned).
	ErrUnknownToken = NewRefusal(codes.Unauthenticated, "unknown_token", "identity: unknown join token")
	// ErrTokenUsed means a join token was already consumed; tokens are one-time.
	ErrTokenUsed = NewRefusal(codes.Unauthenticated, "token_used", "identity: join token already used")
	// ErrTokenExpired means a join token's lifetime has passed.
	ErrTokenExpired = NewRefusal(codes.Unauthenticated, "token_expired", "identity: join token expired")
	// ErrNoRegistration means the caller was authenticated but no
	// registration entry grants it an identity.
	ErrNoRegistration = NewRefusal(codes.PermissionDenied, "no_registration", "identity: no registration for caller")
	// ErrReservedID means an identity under ReservedPathPrefix was asked
	// for by someone who may not have it.
	ErrReservedID = NewRefusal(codes.PermissionDenied, "reserved_id", "identity: reserved SPIFFE ID")
)

// Attestor names used in Identity.Attestor; they end up in logs and metric
// labels, so they are stable strings.
const (
	AttestorUnix      = "unix"
	AttestorJoinToken = "join_token"
)

// Identity is what an attestor proved about a caller.
type Identity struct {
	// ID is the SPIFFE ID the caller may be issued.
	ID spiffeid.ID
	// DNSNames are the DNS SANs this identity may carry.
	DNSNames []string
	// EdgeCertificates are the edge certificates the caller may fetch.
	EdgeCertificates []string
	// Attestor names the attestor that proved the identity, for logs and
	// metrics ("unix", "join_token", later "k8s_sat").
	Attestor string
	// Instance names the one running instance the credential was bound to,
	// as the attestor verified it (a pod's UID for a ServiceAccount token
	// bound to a pod); empty when the credential names none. Many instances
	// share an ID (the replicas of a Deployment), so whatever must be counted
	// per instance is keyed by ID and Instance together.
	Instance string
}

// PeerCred holds unix socket peer credentials as reported by SO_PEERCRED.
// The kernel fills them in at connect time, so the caller cannot forge them.
type PeerCred struct {
	UID, GID uint32
	PID      int32
}

// String formats the credentials for error messages and logs.
func (p PeerCred) String() string {
	return fmt.Sprintf("uid=%d gid=%d pid=%d", p.UID, p.GID, p.PID)
}

// Credential is everything a caller presented. It is one struct rather than
// an interface so the gRPC layer can fill in whatever it has and each
// attestor looks only at the part it understands.
type Credential struct {
	// BearerToken is the token from the request metadata, if any.
	BearerToken string
	// Peer is set when the caller connected over a unix socket.
	Peer *PeerCred
}

// Attestor proves an Identity from a Credential. It returns an error
// wrapping ErrNotApplicable when the credential is not of a kind it handles.
type Attestor interface {
	Attest(ctx context.Context, cred Credential) (Identity, error)
}

// Chain tries attestors in order and returns the first answer that is not
// ErrNotApplicable, whether an identity or a real failure: a token that one
// attestor recognises and rejects must not fall through to a weaker one.
type Chain []Attestor

var _ Attestor = Chain(nil)

// Attest implements Attestor.
func (c Chain) Attest(ctx context.Context, cred Credential) (Identity, error) {
	for _, a := range c {
		id, err := a.Attest(ctx, cred)
		if errors.Is(err, ErrNotApplicable) {
			continue
		}
		return id, err
	}
	return Identity{}, ErrNotApplicable
}
