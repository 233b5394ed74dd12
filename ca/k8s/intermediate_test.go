package k8s

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

// TestFollowerMirrorsIntermediateRenewal: only the leader renews the
// intermediate; a follower loads it from the Secret and signs with it, and
// drops the old one's files when the leader retires it.
func TestFollowerMirrorsIntermediateRenewal(t *testing.T) {
	ctx := context.Background()
	short := func(cfg *ca.Config) {
		cfg.IntermediateTTL, cfg.MaxTTL, cfg.DefaultTTL = 3*time.Minute, time.Minute, time.Minute
	}
	leaderCA := catest.New(t, "example.org", short)
	fcfg := ca.Config{Dir: filepath.Join(t.TempDir(), "ca"), TrustDomain: leaderCA.TrustDomain(), Clock: leaderCA.Clock}
	short(&fcfg)
	fca, err := ca.New(fcfg)
	require.NoError(t, err)
	followerCA := &catest.CA{CA: fca, Clock: leaderCA.Clock, Dir: fcfg.Dir}
	cs := fake.NewClientset()
	rv := 0 // the fake clientset keeps no resourceVersion; the State compares them
	cs.PrependReactor("*", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := a.(k8stesting.CreateAction); ok {
			rv++
			o.GetObject().(*corev1.Secret).ResourceVersion = strconv.Itoa(rv)
		}
		return false, nil, nil
	})
	cfg := StateConfig{Client: cs, Namespace: "certmesh", TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")}
	leader, err := NewState(cfg, leaderCA.CA, leaderCA.Clock)
	require.NoError(t, err)
	follower, err := NewState(cfg, followerCA.CA, leaderCA.Clock)
	require.NoError(t, err)
	require.NoError(t, leader.Bootstrap(ctx))
	require.NoError(t, follower.Bootstrap(ctx))
	require.Equal(t, leaderCA.BundlePEM(), followerCA.BundlePEM(), "one CA")
	sync := func() {
		t.Helper()
		require.NoError(t, leader.Publish(ctx))
		sec, err := cs.CoreV1().Secrets("certmesh").Get(ctx, DefaultSecretName, metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, follower.apply(sec))
	}

	leaderCA.Clock.Step(45 * time.Second)
	first := followerCA.SVID(t, "spiffe://example.org/w", time.Minute)
	leaderCA.Clock.Step(45 * time.Second)
	require.NoError(t, leaderCA.Advance())
	sync()
	second := followerCA.SVID(t, "spiffe://example.org/w", time.Minute)
	require.NotEqual(t, first.Certificates[1].Raw, second.Certificates[1].Raw, "the follower signs with the leader's new intermediate")
	require.Equal(t, leaderCA.Status().Authorities[0].IntermediateEnd, second.Certificates[1].NotAfter)
	for _, s := range []*x509svid.SVID{first, second} {
		_, _, err := x509svid.Verify(s.Certificates, followerCA.Bundle(), x509svid.WithTime(leaderCA.Clock.Now()))
		require.NoError(t, err)
	}

	id := followerCA.Status().Authorities[0].ID
	old, err := filepath.Glob(filepath.Join(followerCA.Dir, "authorities", id, "intermediate.*"))
	require.NoError(t, err)
	require.Len(t, old, 2, "the old intermediate is kept while its leaves live")
	leaderCA.Clock.Step(90 * time.Second) // the first intermediate ends; the second is renewed
	require.NoError(t, leaderCA.Advance())
	sync()
	old, err = filepath.Glob(filepath.Join(followerCA.Dir, "authorities", id, "intermediate.*"))
	require.NoError(t, err)
	require.Empty(t, old, "the follower removes what the leader retired")
	require.Len(t, followerCA.Status().Authorities[0].OldIntermediates, 1)
}
