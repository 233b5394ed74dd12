package workload

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/identity"
)

// rawCalls makes each Workload API method once with the generated client
// and returns the status of its first response.
var rawCalls = []struct {
	name string
	call func(context.Context, workloadpb.SpiffeWorkloadAPIClient) error
}{
	{methodX509SVID, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
		s, err := c.FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}},
	{methodX509Bundles, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
		s, err := c.FetchX509Bundles(ctx, &workloadpb.X509BundlesRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}},
	{methodJWTBundles, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
		s, err := c.FetchJWTBundles(ctx, &workloadpb.JWTBundlesRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}},
	{methodJWTSVID, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
		_, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"db"}})
		return err
	}},
	{methodValidateJWT, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
		_, err := c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "db", Svid: "x.y.z"})
		return err
	}},
}

func TestMissingSecurityHeaderRefused(t *testing.T) {
	e := startRegistered(t)
	e.src.issue(t, webID)
	raw := e.raw(t)
	for _, tt := range rawCalls {
		t.Run(tt.name, func(t *testing.T) {
			for _, ctx := range []context.Context{
				testCtx(t),
				metadata.AppendToOutgoingContext(testCtx(t), securityHeader, "false"),
				metadata.AppendToOutgoingContext(testCtx(t), securityHeader, "true", securityHeader, "true"),
			} {
				err := tt.call(ctx, raw)
				require.Equal(t, codes.InvalidArgument, status.Code(err))
				require.Equal(t, "security header missing from request", status.Convert(err).Message())
			}
		})
	}
	require.Equal(t, 15.0, testutil.ToFloat64(e.metrics.Refused("missing_header")))
}

// TestUnregisteredCallerDenied registers a different uid: the test process
// has a valid connection and header but no registration, and must get
// PermissionDenied from every method with go-spiffe's client.
func TestUnregisteredCallerDenied(t *testing.T) {
	e := start(t, os.Getuid()+1)
	e.src.issue(t, webID) // the registered workload's SVID exists; we must not get it
	c := e.client(t)
	tests := []struct {
		name string
		call func(context.Context, *workloadapi.Client) error
	}{
		{methodX509SVID, func(ctx context.Context, c *workloadapi.Client) error { _, err := c.FetchX509SVID(ctx); return err }},
		{methodX509Bundles, func(ctx context.Context, c *workloadapi.Client) error { _, err := c.FetchX509Bundles(ctx); return err }},
		{methodJWTBundles, func(ctx context.Context, c *workloadapi.Client) error { _, err := c.FetchJWTBundles(ctx); return err }},
		{methodJWTSVID, func(ctx context.Context, c *workloadapi.Client) error {
			_, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"})
			return err
		}},
		{methodValidateJWT, func(ctx context.Context, c *workloadapi.Client) error {
			_, err := c.ValidateJWTSVID(ctx, "x.y.z", "db")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, codes.PermissionDenied, status.Code(tt.call(testCtx(t), c)))
		})
	}
	require.Equal(t, 5.0, testutil.ToFloat64(e.metrics.Refused("no_registration")))
}

// attestorFunc adapts a function to identity.Attestor.
type attestorFunc func(context.Context, identity.Credential) (identity.Identity, error)

func (f attestorFunc) Attest(ctx context.Context, c identity.Credential) (identity.Identity, error) {
	return f(ctx, c)
}

// callerCtx is the context gRPC would give a call from uid over a
// PeerCredentials listener, header included.
func callerCtx(uid uint32) context.Context {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(securityHeader, "true"))
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: identity.PeerAuthInfo{Cred: identity.PeerCred{UID: uid}}})
}

func TestAuthorizeRefusals(t *testing.T) {
	foreign := attestorFunc(func(context.Context, identity.Credential) (identity.Identity, error) {
		return identity.Identity{ID: spiffeid.RequireFromString("spiffe://evil.org/web")}, nil
	})
	broken := attestorFunc(func(context.Context, identity.Credential) (identity.Identity, error) {
		return identity.Identity{}, errors.New("attestor exploded")
	})
	noPeer := metadata.NewIncomingContext(context.Background(), metadata.Pairs(securityHeader, "true"))
	tests := []struct {
		name     string
		attestor identity.Attestor
		ctx      context.Context
		reason   string
	}{
		{name: "no peer credentials", attestor: foreign, ctx: noPeer, reason: "no_peer_credentials"},
		{name: "attested into another trust domain", attestor: foreign, ctx: callerCtx(1), reason: "foreign_trust_domain"},
		{name: "attestor error", attestor: broken, ctx: callerCtx(1), reason: "attestation_failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics(nil)
			h, err := New(Config{Source: newFakeSource(t), Attestor: tt.attestor, Metrics: m})
			require.NoError(t, err)
			_, err = h.FetchJWTSVID(tt.ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"db"}})
			require.Equal(t, codes.PermissionDenied, status.Code(err))
			require.Equal(t, 1.0, testutil.ToFloat64(m.Refused(tt.reason)))
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	att := &identity.PeerAttestor{}
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{name: "complete", cfg: Config{Source: &fakeSource{}, Attestor: att}},
		{name: "no source", cfg: Config{Attestor: att}, want: ErrNoSource},
		{name: "no attestor", cfg: Config{Source: &fakeSource{}}, want: ErrNoAttestor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(tt.cfg)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, h.log)
			require.NotNil(t, h.metrics)
			require.NotNil(t, h.clock)
		})
	}
}

// liarSource hands out the db workload's SVIDs whoever asks: the handler
// must refuse to pass them on.
type liarSource struct{ *fakeSource }

func (l liarSource) X509SVID(spiffeid.ID) (*x509svid.SVID, bool) {
	return l.fakeSource.X509SVID(spiffeid.RequireFromString(dbID))
}

func (l liarSource) FetchJWTSVID(ctx context.Context, _ spiffeid.ID, aud []string) (*jwtsvid.SVID, error) {
	return l.fakeSource.FetchJWTSVID(ctx, spiffeid.RequireFromString(dbID), aud)
}

func TestNeverSomeoneElsesIdentity(t *testing.T) {
	src := newFakeSource(t)
	src.issue(t, dbID)
	uid := uint32(os.Getuid())
	h, err := New(Config{Source: liarSource{src}, Attestor: &identity.PeerAttestor{Registrations: registrations(t, int(uid))}})
	require.NoError(t, err)

	resp, ok, err := h.x509SVIDResponse(spiffeid.RequireFromString(webID))
	require.Error(t, err)
	require.False(t, ok)
	require.Nil(t, resp)

	jwtResp, err := h.FetchJWTSVID(callerCtx(uid), &workloadpb.JWTSVIDRequest{Audience: []string{"db"}})
	require.Equal(t, codes.Internal, status.Code(err))
	require.Nil(t, jwtResp)
}
