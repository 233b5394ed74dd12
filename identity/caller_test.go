package identity

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
)

type attestFunc func(context.Context, Credential) (Identity, error)

func (f attestFunc) Attest(ctx context.Context, c Credential) (Identity, error) { return f(ctx, c) }

func TestAttestPeerRefusals(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	peerCtx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: PeerAuthInfo{Cred: PeerCred{UID: 1000}}})
	answer := func(id string, err error) Attestor {
		return attestFunc(func(context.Context, Credential) (Identity, error) {
			if err != nil {
				return Identity{}, err
			}
			return Identity{ID: spiffeid.RequireFromString(id)}, nil
		})
	}
	tests := []struct {
		name   string
		ctx    context.Context
		att    Attestor
		want   error
		reason string
	}{
		{name: "attested", ctx: peerCtx, att: answer("spiffe://example.org/web", nil)},
		{name: "no peer credentials", ctx: context.Background(), att: answer("spiffe://example.org/web", nil), want: ErrNoPeerCredentials, reason: "no_peer_credentials"},
		{name: "no registration is passed on", ctx: peerCtx, att: answer("", fmt.Errorf("%w: uid=1000", ErrNoRegistration)), want: ErrNoRegistration, reason: "no_registration"},
		{name: "no attestor applies", ctx: peerCtx, att: Chain(nil), want: ErrNotApplicable, reason: "attestation_failed"},
		{name: "attestor broke", ctx: peerCtx, att: answer("", errors.New("boom")), want: ErrAttestationFailed, reason: "attestation_failed"},
		{name: "foreign trust domain", ctx: peerCtx, att: answer("spiffe://evil.org/web", nil), want: ErrForeignTrustDomain, reason: "foreign_trust_domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := AttestPeer(tt.ctx, tt.att, td)
			if tt.want == nil {
				require.NoError(t, err)
				require.Equal(t, "spiffe://example.org/web", id.ID.String())
				return
			}
			require.ErrorIs(t, err, tt.want)
			r, ok := RefusalOf(err)
			require.True(t, ok)
			require.Equal(t, codes.PermissionDenied, r.Code())
			require.Equal(t, tt.reason, r.Reason())
		})
	}
}

func TestRefusalOf(t *testing.T) {
	r, ok := RefusalOf(fmt.Errorf("wrapped: %w", ErrTokenUsed))
	require.True(t, ok)
	require.Equal(t, codes.Unauthenticated, r.Code())
	require.Equal(t, "token_used", r.Reason())
	require.False(t, errors.Is(ErrTokenUsed, ErrTokenExpired), "sentinels stay distinct")
	_, ok = RefusalOf(errors.New("plain"))
	require.False(t, ok)
}
