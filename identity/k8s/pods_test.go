package k8s

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/identity"
)

// podStoreOf is a synced pod cache holding exactly pods, whatever the apiserver
// holds: it stands for a watch that lags behind.
func podStoreOf(t *testing.T, pods ...*corev1.Pod) cache.Store {
	t.Helper()
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	for _, p := range pods {
		m, err := podLabelsOnly(p)
		require.NoError(t, err)
		require.NoError(t, store.Add(m))
	}
	return store
}

func withUID(p *corev1.Pod, uid string) *corev1.Pod {
	p.UID = types.UID(uid)
	return p
}

// TestPodCache: the cache answers only for the token's pod with the token's UID;
// every other case reads the pod from the apiserver as without a cache, so a
// deleted or recreated pod is still ErrPodGone and a pod newer than the watch
// still gets its names.
func TestPodCache(t *testing.T) {
	const aud = "spiffe://example.org"
	labels := map[string]string{"app": "web"}
	webDNS := []string{"web.shop.svc", "web.shop.svc.cluster.local"}
	noUID := saClaims(aud, now.Add(time.Hour), "web-0")
	noUID["kubernetes.io"].(map[string]any)["pod"] = map[string]any{"name": "web-0"}
	cases := []struct {
		name     string
		token    map[string]any
		cached   []*corev1.Pod
		server   []runtime.Object // pods in the apiserver
		rejected bool
		wantGETs int
		want     error
		wantDNS  []string
	}{
		{name: "in the cache with the token's UID", cached: []*corev1.Pod{pod("web-0", labels)},
			wantGETs: 0, wantDNS: webDNS},
		{name: "newer than the watch", server: []runtime.Object{pod("web-0", labels)},
			wantGETs: 1, wantDNS: webDNS},
		{name: "cache holds the pod's predecessor", cached: []*corev1.Pod{withUID(pod("web-0", nil), "uid-old")},
			server: []runtime.Object{pod("web-0", labels)}, wantGETs: 1, wantDNS: webDNS},
		{name: "deleted", wantGETs: 1, want: ErrPodGone},
		{name: "recreated", server: []runtime.Object{withUID(pod("web-0", labels), "uid-new")},
			wantGETs: 1, want: ErrPodGone},
		{name: "deleted, review refused", rejected: true, wantGETs: 1, want: ErrPodGone},
		{name: "token without pod UID", token: noUID, cached: []*corev1.Pod{pod("web-0", labels)},
			server: []runtime.Object{pod("web-0", labels)}, wantGETs: 1, wantDNS: webDNS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			claims := tc.token
			if claims == nil {
				claims = saClaims(aud, now.Add(time.Hour), "web-0")
			}
			tok := jwtFor(t, claims)
			objs := append([]runtime.Object{svc("web", labels), svc("db", map[string]string{"app": "db"})}, tc.server...)
			cs, _ := fakeCluster(t, map[string]bool{tok: tc.rejected}, objs...)
			a, err := New(Config{Client: cs, TrustDomain: td, Clock: clocktesting.NewFakePassiveClock(now)})
			require.NoError(t, err)
			a.pods.set(podStoreOf(t, tc.cached...))
			require.True(t, a.PodsCached())

			id, err := a.Attest(context.Background(), identity.Credential{BearerToken: tok})
			require.Equal(t, tc.wantGETs, countActions(cs, "get", "pods"), "pod GETs")
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantDNS, id.DNSNames)
		})
	}
}

// TestWatchPods: with the Pod informer synced, a review GETs no pod and the
// cache keeps only what a review needs; once a deleted pod has left the cache,
// its token is ErrPodGone again (the real apiserver refuses it even earlier, in
// the TokenReview; the fake one does not).
func TestWatchPods(t *testing.T) {
	web := pod("web-0", map[string]string{"app": "web"})
	web.Annotations = map[string]string{"big": "value"}
	web.Spec.Containers = []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}
	cs, _ := fakeCluster(t, nil, web, svc("web", map[string]string{"app": "web"}))
	a, err := New(Config{Client: cs, TrustDomain: td, WatchServices: true, WatchPods: true, CacheTTL: -1, Clock: clocktesting.NewFakePassiveClock(now)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	require.Eventually(t, func() bool { return a.ServicesCached() && a.PodsCached() }, 10*time.Second, 5*time.Millisecond)

	tok := jwtFor(t, saClaims("spiffe://example.org", now.Add(time.Hour), "web-0"))
	for range 3 {
		id, err := a.Attest(context.Background(), identity.Credential{BearerToken: tok})
		require.NoError(t, err)
		require.Equal(t, []string{"web.shop.svc", "web.shop.svc.cluster.local"}, id.DNSNames)
	}
	require.Zero(t, countActions(cs, "get", "pods"), "no pod GET per review")

	obj, exists, err := a.pods.get().GetByKey("shop/web-0")
	require.NoError(t, err)
	require.True(t, exists)
	cached, ok := obj.(*metav1.PartialObjectMetadata)
	require.True(t, ok, "%T", obj)
	require.Equal(t, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", UID: "uid-web-0",
		ResourceVersion: cached.ResourceVersion, Labels: map[string]string{"app": "web"}}}, cached, "only name, UID and labels are kept")

	require.NoError(t, cs.CoreV1().Pods("shop").Delete(ctx, "web-0", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := a.Attest(context.Background(), identity.Credential{BearerToken: tok})
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "the deletion reaches the cache")
	_, err = a.Attest(context.Background(), identity.Credential{BearerToken: tok})
	require.ErrorIs(t, err, ErrPodGone)

	cancel()
	require.NoError(t, <-done)
	done <- nil // for the cleanup
	require.False(t, a.PodsCached(), "a stopped cache is not used")
	require.False(t, a.ServicesCached())
}

// TestWatchPodsOnly: the Pod cache works without the Service cache.
func TestWatchPodsOnly(t *testing.T) {
	cs, _ := fakeCluster(t, nil, pod("web-0", map[string]string{"app": "web"}), svc("web", map[string]string{"app": "web"}))
	a, err := New(Config{Client: cs, TrustDomain: td, WatchPods: true, CacheTTL: -1, Clock: clocktesting.NewFakePassiveClock(now)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	require.Eventually(t, a.PodsCached, 10*time.Second, 5*time.Millisecond)
	require.False(t, a.ServicesCached())

	id, err := a.Attest(context.Background(), identity.Credential{BearerToken: jwtFor(t, saClaims("spiffe://example.org", now.Add(time.Hour), "web-0"))})
	require.NoError(t, err)
	require.Equal(t, []string{"web.shop.svc", "web.shop.svc.cluster.local"}, id.DNSNames)
	require.Zero(t, countActions(cs, "get", "pods"))
	require.Equal(t, 1, countActions(cs, "list", "services"), "Services are listed per review without their cache")
}

// TestPodLabelsOnlyTrimsMetadata: from a metadata-only watch, what is kept of a
// pod is the same as from a typed one: no annotations, managedFields or owners.
func TestPodLabelsOnlyTrimsMetadata(t *testing.T) {
	full := metav1.ObjectMeta{
		Name: "web-0", Namespace: "shop", UID: "uid-1", ResourceVersion: "7", Labels: map[string]string{"app": "web"},
		Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web"}},
	}
	want := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: "web-0", Namespace: "shop", UID: "uid-1", ResourceVersion: "7", Labels: map[string]string{"app": "web"},
	}}
	fromMeta, err := podLabelsOnly(&metav1.PartialObjectMetadata{ObjectMeta: full})
	require.NoError(t, err)
	require.Equal(t, want, fromMeta)
	fromPod, err := podLabelsOnly(&corev1.Pod{ObjectMeta: full, Spec: corev1.PodSpec{NodeName: "n1"}})
	require.NoError(t, err)
	require.Equal(t, want, fromPod)
	tomb := cache.DeletedFinalStateUnknown{Key: "shop/web-0"}
	kept, err := podLabelsOnly(tomb)
	require.NoError(t, err)
	require.Equal(t, tomb, kept)
}
