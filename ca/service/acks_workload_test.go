package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca/service"
	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/identity/k8s"
)

var webSA = spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")

// fakePods stands in for the ServiceAccount token attestor: "pod:UID" is a
// token bound to the pod UID (as the TokenReview reports it), "unbound" a
// token bound to no pod, "gone:UID" a token whose pod was deleted. All are
// web's.
type fakePods struct{}

var _ identity.Attestor = fakePods{}

func (fakePods) Attest(_ context.Context, cred identity.Credential) (identity.Identity, error) {
	tok := cred.BearerToken
	switch {
	case strings.HasPrefix(tok, "pod:"):
		return identity.Identity{ID: webSA, Attestor: k8s.AttestorName, Instance: strings.TrimPrefix(tok, "pod:")}, nil
	case tok == "unbound":
		return identity.Identity{ID: webSA, Attestor: k8s.AttestorName}, nil
	case strings.HasPrefix(tok, "gone:"):
		return identity.Identity{}, k8s.ErrPodGone
	}
	return identity.Identity{}, identity.ErrNotApplicable
}

// newPodsFixture chains fakePods before the fixture's join tokens, as
// `certmesh server --kubernetes` chains its attestors.
func newPodsFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, func(c *service.Config) { c.Attestor = identity.Chain{fakePods{}, c.Attestor} })
}

// reportWithToken reports as a workload-mode agent does: its SVID (if any)
// over mTLS and its pod's token as a bearer.
func (f *fixture) reportWithToken(t *testing.T, svid *x509svid.SVID, token string, rep wire.AckReport) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(bearer(token), 10*time.Second)
	defer cancel()
	return wire.SendAckReport(ctx, f.conn(t, svid), rep)
}

// TestAckWorkloadModeSlots: a workload-mode agent's report counts, in a
// slot named by the attested pod UID — replicas sharing a ServiceAccount
// count one each, one pod's token fills one slot whatever instance it
// claims — and it holds the gate like a node agent's.
func TestAckWorkloadModeSlots(t *testing.T) {
	f := newPodsFixture(t)
	web := f.ca.SVID(t, webSA.String(), time.Hour)
	node := f.ca.SVID(t, "spiffe://example.org/certmesh/node/n1", time.Hour)
	roots := wire.BundleDigest(f.ca.Roots())

	require.NoError(t, f.reportWithToken(t, web, "pod:uid-1", f.currentReport("a", 1, 2)))
	require.NoError(t, f.reportWithToken(t, nil, "pod:uid-1", f.currentReport("b", 0, 2)), "the token alone authenticates")
	require.Equal(t, 1, f.acks.Agents(), "one pod's token fills one slot, whatever instance it claims")
	ok, _ := f.acks.Gate(roots)
	require.True(t, ok, "the pod's later report replaced the earlier one")

	require.NoError(t, f.reportWithToken(t, web, "pod:uid-2", f.currentReport("a", 2, 3)))
	require.NoError(t, f.report(t, node, f.currentReport("a", 0, 4)))
	require.Equal(t, 3, f.acks.Agents(), "replicas of one ServiceAccount count one each, beside the node agent")
	ok, lagging := f.acks.Gate(roots)
	require.False(t, ok)
	require.Equal(t, 2, lagging, "a workload-mode agent's lagging watchers hold the gate")

	require.NoError(t, f.reportWithToken(t, web, "pod:uid-2", f.currentReport("a", 0, 3)))
	ok, lagging = f.acks.Gate(roots)
	require.True(t, ok)
	require.Zero(t, lagging)
}

// TestAckWorkloadModeRefusals: a token counts only when the attestor binds
// it to a pod; a deleted pod's token, an unbound token, a token that
// disagrees with the SVID beside it and a join token are refused, each
// counted by its reason and taking no slot — and the join token is not
// spent.
func TestAckWorkloadModeRefusals(t *testing.T) {
	f := newPodsFixture(t)
	other := f.ca.SVID(t, "spiffe://example.org/ns/default/sa/other", time.Hour)
	joinToken, _, err := f.tokens.Create(spiffeid.RequireFromString("spiffe://example.org/certmesh/node/n9"), time.Minute)
	require.NoError(t, err)
	tests := []struct {
		name   string
		svid   *x509svid.SVID
		token  string
		code   codes.Code
		reason string
	}{
		{name: "deleted pod", token: "gone:uid-1", code: codes.Unauthenticated, reason: "k8s_pod_gone"},
		{name: "token bound to no pod", token: "unbound", code: codes.PermissionDenied, reason: "ack_not_agent"},
		{name: "SVID of another identity", svid: other, token: "pod:uid-1", code: codes.PermissionDenied, reason: "credentials_disagree"},
		{name: "join token", token: joinToken, code: codes.PermissionDenied, reason: "ack_not_agent"},
		{name: "unknown token", token: "opaque", code: codes.Unauthenticated, reason: "unsupported_credential"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(f.metrics.Refused(tt.reason))
			err := f.reportWithToken(t, tt.svid, tt.token, f.currentReport("x", 0, 1))
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Equal(t, before+1, testutil.ToFloat64(f.metrics.Refused(tt.reason)), "refusal counted")
			require.Zero(t, f.acks.Agents(), "a refused report takes no slot")
		})
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = f.dial(t, nil).CreateCertificate(bearer(joinToken), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
	require.NoError(t, err, "the refused report did not spend the join token")
}

// countingPods is fakePods counting its attestations.
type countingPods struct{ n *int }

func (c countingPods) Attest(ctx context.Context, cred identity.Credential) (identity.Identity, error) {
	*c.n++
	return fakePods{}.Attest(ctx, cred)
}

// TestAckWorkloadTokenReviewedOncePerMinute: a pod's heartbeats do not cost
// a TokenReview each; the token is attested again once a minute has passed.
func TestAckWorkloadTokenReviewedOncePerMinute(t *testing.T) {
	reviews := 0
	f := newFixtureWith(t, func(c *service.Config) { c.Attestor = identity.Chain{countingPods{&reviews}, c.Attestor} })
	for range 5 {
		require.NoError(t, f.reportWithToken(t, nil, "pod:uid-1", f.currentReport("a", 0, 1)))
		f.ca.Clock.Step(10 * time.Second)
	}
	require.Equal(t, 1, reviews, "five heartbeats within a minute, one review")
	f.ca.Clock.Step(20 * time.Second)
	require.NoError(t, f.reportWithToken(t, nil, "pod:uid-1", f.currentReport("a", 0, 1)))
	require.Equal(t, 2, reviews, "reviewed again after a minute")
	require.NoError(t, f.reportWithToken(t, nil, "pod:uid-2", f.currentReport("a", 0, 1)))
	require.Equal(t, 3, reviews, "another pod's token is reviewed on its own")
}
