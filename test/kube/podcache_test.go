package kube_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8smetadata "k8s.io/client-go/metadata"

	k8sid "github.com/certmesh/certmesh/identity/k8s"
	"github.com/certmesh/certmesh/test/kube/kubetest"
)

// TestUncachedReviewCostsOneRequest: with the Service and Pod watch caches
// (the server's defaults) every uncached review costs the apiserver exactly one
// request, the TokenReview, and still yields the pod's Service DNS names; a pod
// newer than the watch still gets its SVID (the attestor GETs it), and a
// deleted or recreated pod's token is still refused as k8s_pod_gone.
func TestUncachedReviewCostsOneRequest(t *testing.T) {
	ns := cluster.Namespace(t)
	service(t, ns, "web", map[string]string{"app": "web"})
	service(t, ns, "db", map[string]string{"app": "db"})
	const pods = 4
	tokens := make([]string, pods)
	for i := range tokens {
		pod := cluster.Pod(t, ns, fmt.Sprintf("p-%d", i), "web", map[string]string{"app": "web"})
		tokens[i] = cluster.ServiceAccountToken(t, ns, "web", audience, pod)
	}
	var requests atomic.Int64
	// A review cache of one entry and rotating tokens: every request is reviewed.
	srv := startServer(t, serverOpts{ns: ns, requests: &requests, cacheSize: 1, watchServices: true, watchPods: true})
	client := caClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	csr := newCSR(t)
	wantDNS := []string{"web." + ns + ".svc", "web." + ns + ".svc.cluster.local"}

	requests.Store(0)
	const svids = 3 * pods
	for i := range svids {
		leaf, err := requestSVID(ctx, client, csr, tokens[i%pods])
		require.NoError(t, err)
		require.ElementsMatch(t, wantDNS, leaf.DNSNames)
	}
	require.Equal(t, int64(svids), requests.Load(), "apiserver requests for %d uncached SVIDs: the TokenReview alone", svids)

	newer := cluster.Pod(t, ns, "newer", "web", map[string]string{"app": "web"})
	leaf, err := requestSVID(ctx, client, csr, cluster.ServiceAccountToken(t, ns, "web", audience, newer))
	require.NoError(t, err, "a pod the watch may not have delivered yet")
	require.ElementsMatch(t, wantDNS, leaf.DNSNames)

	// Tokens never reviewed before their pod goes, so that no review cache (the
	// apiserver's or certmesh's) still vouches for them.
	gone := cluster.Pod(t, ns, "gone", "web", map[string]string{"app": "web"})
	goneToken := cluster.ServiceAccountToken(t, ns, "web", audience, gone)
	require.NoError(t, cluster.Client.CoreV1().Pods(ns).Delete(ctx, gone.Name, metav1.DeleteOptions{}))
	again := cluster.Pod(t, ns, "again", "web", map[string]string{"app": "web"})
	againToken := cluster.ServiceAccountToken(t, ns, "web", audience, again)
	require.NoError(t, cluster.Client.CoreV1().Pods(ns).Delete(ctx, again.Name, metav1.DeleteOptions{}))
	cluster.Pod(t, ns, "again", "web", map[string]string{"app": "web"}) // same name, new UID
	for name, tok := range map[string]string{"deleted": goneToken, "recreated": againToken} {
		before := srv.refusals("k8s_pod_gone")
		_, err := requestSVID(ctx, client, csr, tok)
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%s: %v", name, err)
		require.Equal(t, before+1, srv.refusals("k8s_pod_gone"), name)
	}
}

// TestAttestorWatchesWithDeployRBAC runs the attestor's Service and Pod watches
// (the Pod watch metadata-only, as certmesh server runs it) as certmesh-server's
// ServiceAccount with deploy/kubernetes/rbac.yaml's rights: both caches sync, so
// the Role grants what --watch-services and --watch-pods need. Without pods
// list/watch the Pod cache never syncs and this test fails.
func TestAttestorWatchesWithDeployRBAC(t *testing.T) {
	sysNS := cluster.Namespace(t)
	cluster.ServiceAccount(t, sysNS, "certmesh-server")
	applyRBAC(t, sysNS)
	sa := cluster.ServiceAccountConfig(t, sysNS, "certmesh-server")
	meta, err := k8smetadata.NewForConfig(sa)
	require.NoError(t, err)
	att, err := k8sid.New(k8sid.Config{Client: kubetest.NewClient(t, sa), Metadata: meta, TrustDomain: td,
		WatchServices: true, WatchPods: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- att.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	require.Eventually(t, func() bool { return att.ServicesCached() && att.PodsCached() }, 30*time.Second, 50*time.Millisecond,
		"the watches did not sync as certmesh-server")
}
