package k8s

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/identity"
)

var (
	td  = spiffeid.RequireTrustDomainFromString("example.org")
	now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// jwtFor makes an unsigned JWT-shaped token: the fake apiserver decides.
func jwtFor(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	require.NoError(t, err)
	return "eyJhbGciOiJFUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

func saClaims(aud any, exp time.Time, pod string) map[string]any {
	c := map[string]any{"sub": "system:serviceaccount:shop:web", "aud": aud, "exp": exp.Unix(),
		"kubernetes.io": map[string]any{"namespace": "shop"}}
	if pod != "" {
		c["kubernetes.io"].(map[string]any)["pod"] = map[string]any{"name": pod, "uid": "uid-" + pod}
	}
	return c
}

// fakeCluster answers TokenReviews: authenticated unless the token is in rejected.
func fakeCluster(t *testing.T, rejected map[string]bool, objs ...runtime.Object) (*fake.Clientset, *int) {
	cs := fake.NewClientset(objs...)
	reviews := 0
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews++
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		c, err := parseClaims(tr.Spec.Token)
		require.NoError(t, err)
		if rejected[tr.Spec.Token] {
			return true, tr, nil
		}
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
			User: authenticationv1.UserInfo{Username: c.Subject, Extra: map[string]authenticationv1.ExtraValue{}}}
		if c.K8s.Pod != nil {
			tr.Status.User.Extra[podNameExtra] = authenticationv1.ExtraValue{c.K8s.Pod.Name}
			tr.Status.User.Extra[podUIDExtra] = authenticationv1.ExtraValue{c.K8s.Pod.UID}
		}
		return true, tr, nil
	})
	return cs, &reviews
}

func pod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Labels: labels}}
}

func svc(name string, sel map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: corev1.ServiceSpec{Selector: sel}}
}

func TestAttest(t *testing.T) {
	const aud = "spiffe://example.org"
	good := saClaims(aud, now.Add(time.Hour), "web-0")
	cases := []struct {
		name     string
		token    map[string]any
		raw      string
		rejected bool
		policy   Policy
		want     error
		wantDNS  []string
		wantPod  string // Identity.Instance
	}{
		{name: "pod-bound token", token: good, wantDNS: []string{"web.shop.svc", "web.shop.svc.cluster.local"}, wantPod: "uid-web-0"},
		{name: "unbound token has no DNS names nor instance", token: saClaims(aud, now.Add(time.Hour), "")},
		{name: "audience as array", token: saClaims([]string{"x", aud}, now.Add(time.Hour), "")},
		{name: "other audience", token: saClaims("https://other", now.Add(time.Hour), ""), want: ErrWrongAudience},
		{name: "legacy token without audience", token: map[string]any{"sub": "system:serviceaccount:shop:web"}, want: ErrWrongAudience},
		{name: "expired", token: saClaims(aud, now.Add(-time.Second), ""), want: ErrExpired},
		{name: "pod gone", token: saClaims(aud, now.Add(time.Hour), "gone-0"), rejected: true, want: ErrPodGone},
		{name: "rejected", token: saClaims(aud, now.Add(time.Hour), ""), rejected: true, want: ErrRejected},
		{name: "excluded namespace", token: good, policy: Policy{ExcludedNamespaces: []string{"shop"}}, want: ErrExcluded},
		{name: "excluded account", token: good, policy: Policy{ExcludedServiceAccounts: []string{"shop/web"}}, want: ErrExcluded},
		{name: "join token", raw: "cmjt.abc", want: identity.ErrNotApplicable},
		{name: "not a JWT", raw: "opaque", want: identity.ErrNotApplicable},
		{name: "JWT of a user", token: map[string]any{"sub": "alice", "aud": aud}, want: identity.ErrNotApplicable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.raw
			if tok == "" {
				tok = jwtFor(t, tc.token)
			}
			cs, _ := fakeCluster(t, map[string]bool{tok: tc.rejected},
				pod("web-0", map[string]string{"app": "web", "v": "1"}),
				svc("web", map[string]string{"app": "web"}), svc("db", map[string]string{"app": "db"}), svc("headless", nil))
			a, err := New(Config{Client: cs, TrustDomain: td, Policy: tc.policy, Clock: clocktesting.NewFakePassiveClock(now)})
			require.NoError(t, err)
			id, err := a.Attest(context.Background(), identity.Credential{BearerToken: tok})
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "spiffe://example.org/ns/shop/sa/web", id.ID.String())
			require.Equal(t, AttestorName, id.Attestor)
			require.Equal(t, tc.wantDNS, id.DNSNames)
			require.Equal(t, tc.wantPod, id.Instance, "the instance is the pod UID the apiserver vouches for")
		})
	}
}

// TestCache: a token is reviewed once per TTL; refusals are cached too;
// the cache never holds more than its size.
func TestCache(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(now)
	tokA := jwtFor(t, saClaims("spiffe://example.org", now.Add(time.Hour), ""))
	tokB := jwtFor(t, saClaims("spiffe://example.org", now.Add(2*time.Hour), ""))
	cs, reviews := fakeCluster(t, map[string]bool{tokB: true})
	a, err := New(Config{Client: cs, TrustDomain: td, Clock: clk, CacheSize: 1})
	require.NoError(t, err)
	attest := func(tok string) error {
		_, err := a.Attest(context.Background(), identity.Credential{BearerToken: tok})
		return err
	}
	require.NoError(t, attest(tokA))
	require.NoError(t, attest(tokA))
	require.Equal(t, 1, *reviews)
	clk.SetTime(now.Add(DefaultCacheTTL))
	require.NoError(t, attest(tokA))
	require.Equal(t, 2, *reviews, "expired entry is reviewed again")
	require.ErrorIs(t, attest(tokB), ErrRejected)
	require.ErrorIs(t, attest(tokB), ErrRejected)
	require.Equal(t, 3, *reviews, "a refusal is cached")
	require.Equal(t, 1, a.cache.len(), "size bound")
	require.NoError(t, attest(tokA))
	require.Equal(t, 4, *reviews, "evicted by B")
}

// TestReviewUnavailableNotCached: an apiserver error is not remembered.
func TestReviewUnavailableNotCached(t *testing.T) {
	cs := fake.NewClientset()
	calls := 0
	cs.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		return true, nil, errors.New("connection refused")
	})
	a, err := New(Config{Client: cs, TrustDomain: td, Clock: clocktesting.NewFakePassiveClock(now)})
	require.NoError(t, err)
	tok := jwtFor(t, saClaims("spiffe://example.org", now.Add(time.Hour), ""))
	for range 2 {
		_, err = a.Attest(context.Background(), identity.Credential{BearerToken: tok})
		require.ErrorIs(t, err, ErrReviewUnavailable)
	}
	require.Equal(t, 2, calls)
}

// TestWatchServices: with the Service informer synced, a review lists no Services
// and still finds the selecting ones, including a Service created afterwards; the
// cache keeps only what DNS names need.
func TestWatchServices(t *testing.T) {
	web := svc("web", map[string]string{"app": "web"})
	web.Annotations = map[string]string{"big": "value"}
	cs, _ := fakeCluster(t, nil, pod("web-0", map[string]string{"app": "web"}), web, svc("db", map[string]string{"app": "db"}))
	a, err := New(Config{Client: cs, TrustDomain: td, WatchServices: true, CacheTTL: -1, Clock: clocktesting.NewFakePassiveClock(now)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	require.Eventually(t, func() bool { return a.services.get() != nil }, 10*time.Second, 5*time.Millisecond)

	listsBefore := countActions(cs, "list", "services")
	tok := jwtFor(t, saClaims("spiffe://example.org", now.Add(time.Hour), "web-0"))
	id, err := a.Attest(context.Background(), identity.Credential{BearerToken: tok})
	require.NoError(t, err)
	require.Equal(t, []string{"web.shop.svc", "web.shop.svc.cluster.local"}, id.DNSNames)
	require.Equal(t, listsBefore, countActions(cs, "list", "services"), "no Services LIST per review")

	_, err = cs.CoreV1().Services("shop").Create(ctx, svc("web-canary", map[string]string{"app": "web"}), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		id, err := a.Attest(context.Background(), identity.Credential{BearerToken: tok})
		return err == nil && len(id.DNSNames) == 4
	}, 10*time.Second, 10*time.Millisecond, "a new Service reaches the cache")

	cached, err := a.services.get().Services("shop").Get("web")
	require.NoError(t, err)
	require.Empty(t, cached.Annotations, "only name and selector are kept")
	require.Equal(t, map[string]string{"app": "web"}, cached.Spec.Selector)
}

func TestRunWithoutWatchReturns(t *testing.T) {
	a, err := New(Config{Client: fake.NewClientset(), TrustDomain: td})
	require.NoError(t, err)
	require.NoError(t, a.Run(context.Background()))
}

func countActions(cs *fake.Clientset, verb, resource string) int {
	n := 0
	for _, act := range cs.Actions() {
		if act.GetVerb() == verb && act.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

// TestAttestReviewWithoutAudiences: a TokenReview answer that names no
// audience did not check certmesh's, so the token is refused.
func TestAttestReviewWithoutAudiences(t *testing.T) {
	const aud = "spiffe://example.org"
	cs := fake.NewClientset(pod("web-0", nil))
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true,
			User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:web"}}
		return true, tr, nil
	})
	a, err := New(Config{Client: cs, TrustDomain: td, Clock: clocktesting.NewFakePassiveClock(now)})
	require.NoError(t, err)
	_, err = a.Attest(context.Background(), identity.Credential{BearerToken: jwtFor(t, saClaims(aud, now.Add(time.Hour), ""))})
	require.ErrorIs(t, err, ErrWrongAudience)
}
