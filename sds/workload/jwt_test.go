package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/ca/catest"
)

func TestFetchAndValidateJWTSVID(t *testing.T) {
	e := startRegistered(t)
	c := e.client(t)
	ctx := testCtx(t)

	svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", ExtraAudiences: []string{"cache"}})
	require.NoError(t, err)
	require.Equal(t, webID, svid.ID.String())
	require.Equal(t, []string{"db", "cache"}, svid.Audience)

	got, err := c.ValidateJWTSVID(ctx, svid.Marshal(), "cache")
	require.NoError(t, err)
	require.Equal(t, webID, got.ID.String())

	resp, err := e.raw(t).ValidateJWTSVID(withHeader(ctx), &workloadpb.ValidateJWTSVIDRequest{Audience: "db", Svid: svid.Marshal()})
	require.NoError(t, err)
	require.Equal(t, webID, resp.GetSpiffeId())
	require.Equal(t, webID, resp.GetClaims().GetFields()["sub"].GetStringValue())
	require.Len(t, resp.GetClaims().GetFields()["aud"].GetListValue().GetValues(), 2)

	_, err = c.ValidateJWTSVID(ctx, svid.Marshal(), "somebody-else")
	require.Equal(t, codes.InvalidArgument, status.Code(err), "a JWT-SVID for another audience must not validate")
	require.Equal(t, 1.0, testutil.ToFloat64(e.metrics.Refused("invalid_jwt_svid")))
}

func TestFetchJWTSVIDRequests(t *testing.T) {
	e := startRegistered(t)
	raw := e.raw(t)
	tests := []struct {
		name     string
		audience []string
		spiffeID string
		want     codes.Code
	}{
		{name: "audience only", audience: []string{"db"}, want: codes.OK},
		{name: "own ID", audience: []string{"db"}, spiffeID: webID, want: codes.OK},
		{name: "no audience", want: codes.InvalidArgument},
		{name: "empty audience", audience: []string{""}, want: codes.InvalidArgument},
		{name: "too many audiences", audience: strings.Split(strings.Repeat("a,", 16)+"a", ","), want: codes.InvalidArgument},
		{name: "someone else's ID", audience: []string{"db"}, spiffeID: dbID, want: codes.PermissionDenied},
		{name: "other trust domain", audience: []string{"db"}, spiffeID: "spiffe://evil.org/ns/default/sa/web", want: codes.PermissionDenied},
		{name: "malformed ID", audience: []string{"db"}, spiffeID: "https://example.org/web", want: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := raw.FetchJWTSVID(withHeader(testCtx(t)), &workloadpb.JWTSVIDRequest{Audience: tt.audience, SpiffeId: tt.spiffeID})
			require.Equal(t, tt.want, status.Code(err), "%v", err)
			if tt.want == codes.OK {
				require.Len(t, resp.GetSvids(), 1)
				require.Equal(t, webID, resp.GetSvids()[0].GetSpiffeId())
			}
		})
	}
}

func TestValidateJWTSVIDRejects(t *testing.T) {
	e := startRegistered(t)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	now := catest.Epoch
	good := jwt.Claims{Subject: webID, Audience: jwt.Audience{"db"}, Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
	with := func(f func(*jwt.Claims)) jwt.Claims { c := good; f(&c); return c }
	tests := []struct {
		name     string
		svid     string
		audience string
		advance  time.Duration // of the handler's clock, not the wall clock
		want     codes.Code
		reason   string
	}{
		{name: "valid", svid: sign(t, e.src.testKey, testKID, good), audience: "db", want: codes.OK},
		{name: "wrong audience", svid: sign(t, e.src.testKey, testKID, good), audience: "web", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "expired", svid: sign(t, e.src.testKey, testKID, with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Hour)) })), audience: "db", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "expired by the handler's clock", svid: sign(t, e.src.testKey, testKID, good), audience: "db", advance: time.Hour, want: codes.InvalidArgument, reason: "jwt_svid_expired"},
		{name: "no expiry", svid: sign(t, e.src.testKey, testKID, with(func(c *jwt.Claims) { c.Expiry = nil })), audience: "db", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "unknown key", svid: sign(t, other, testKID, good), audience: "db", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "unknown key ID", svid: sign(t, e.src.testKey, "nope", good), audience: "db", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "foreign trust domain", svid: sign(t, e.src.testKey, testKID, with(func(c *jwt.Claims) { c.Subject = "spiffe://evil.org/web" })), audience: "db", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "subject not a SPIFFE ID", svid: sign(t, e.src.testKey, testKID, with(func(c *jwt.Claims) { c.Subject = "web" })), audience: "db", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "garbage", svid: "not.a.jwt", audience: "db", want: codes.InvalidArgument, reason: "invalid_jwt_svid"},
		{name: "no svid", audience: "db", want: codes.InvalidArgument, reason: "missing_argument"},
		{name: "no audience", svid: sign(t, e.src.testKey, testKID, good), want: codes.InvalidArgument, reason: "missing_argument"},
	}
	raw := e.raw(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.clock.SetTime(now.Add(tt.advance))
			before := 0.0
			if tt.reason != "" {
				before = testutil.ToFloat64(e.metrics.Refused(tt.reason))
			}
			resp, err := raw.ValidateJWTSVID(withHeader(testCtx(t)), &workloadpb.ValidateJWTSVIDRequest{Svid: tt.svid, Audience: tt.audience})
			require.Equal(t, tt.want, status.Code(err), "%v", err)
			if tt.want == codes.OK {
				require.Equal(t, webID, resp.GetSpiffeId())
				return
			}
			require.Equal(t, before+1, testutil.ToFloat64(e.metrics.Refused(tt.reason)))
		})
	}
}

type jwtBundlesWatcher struct{ updates chan *jwtbundle.Set }

func (w *jwtBundlesWatcher) OnJWTBundlesUpdate(s *jwtbundle.Set) { w.updates <- s }
func (w *jwtBundlesWatcher) OnJWTBundlesWatchError(error)        {}

func TestFetchJWTBundles(t *testing.T) {
	e := startRegistered(t)
	c := e.client(t)
	set, err := c.FetchJWTBundles(testCtx(t))
	require.NoError(t, err)
	b, err := set.GetJWTBundleForTrustDomain(td)
	require.NoError(t, err)
	require.True(t, b.Equal(e.src.JWTBundle()))
	require.True(t, b.HasJWTAuthority(testKID))

	ctx, cancel := context.WithCancel(testCtx(t))
	w := &jwtBundlesWatcher{updates: make(chan *jwtbundle.Set, 10)}
	done := make(chan error, 1)
	go func() { done <- c.WatchJWTBundles(ctx, w) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	<-w.updates

	rotated := e.src.JWTBundle().Clone()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	require.NoError(t, rotated.AddJWTAuthority("next", key.Public()))
	e.src.setJWTBundle(rotated)

	set = <-w.updates
	b, err = set.GetJWTBundleForTrustDomain(td)
	require.NoError(t, err)
	require.True(t, b.HasJWTAuthority("next"), "a new JWT key must be pushed to watchers")
}

func TestMarshalJWKSIsDeterministic(t *testing.T) {
	b := jwtbundle.New(td)
	for _, kid := range []string{"a", "b", "c", "d"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		require.NoError(t, b.AddJWTAuthority(kid, key.Public()))
	}
	first, err := marshalJWKS(b)
	require.NoError(t, err)
	for range 20 {
		again, err := marshalJWKS(b)
		require.NoError(t, err)
		require.Equal(t, first, again)
	}
	parsed, err := jwtbundle.Parse(td, first)
	require.NoError(t, err)
	require.True(t, parsed.Equal(b))
}

// sign makes an ES256 JWT with the given key ID and claims.
func sign(t testing.TB, key crypto.Signer, kid string, claims jwt.Claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	require.NoError(t, err)
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	require.NoError(t, err)
	return token
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, securityHeader, "true")
}
