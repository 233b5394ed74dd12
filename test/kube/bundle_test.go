package kube_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmesh/certmesh/ca/wire"
	"github.com/certmesh/certmesh/test/harness"
)

func bundleConfigMap(ns string) (*corev1.ConfigMap, error) {
	return cluster.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), wire.TrustBundleConfigMap, metav1.GetOptions{})
}

func bundleIs(ns string, want []byte) func() bool {
	return func() bool {
		cm, err := bundleConfigMap(ns)
		return err == nil && cm.Data[wire.TrustBundleKey] == string(want)
	}
}

// TestBundlePublication: the leader publishes the trust bundle in every
// namespace — a new one gets it, a deleted or edited ConfigMap comes back,
// a rotation updates it — and as a ClusterTrustBundle.
func TestBundlePublication(t *testing.T) {
	home := cluster.Namespace(t)
	srv := startServer(t, serverOpts{ns: home})
	harness.WaitFor(t, 10*time.Second, "leader", srv.Leader.IsLeader)
	harness.WaitFor(t, 10*time.Second, "bundle in the server's namespace", bundleIs(home, srv.CA.BundlePEM()))

	ns := cluster.Namespace(t)
	took := harness.WaitFor(t, 10*time.Second, "bundle in a new namespace", bundleIs(ns, srv.CA.BundlePEM()))
	t.Logf("ConfigMap in a new namespace after %v", took)
	published, err := bundleConfigMap(ns)
	require.NoError(t, err)
	require.Equal(t, []string{wire.TrustBundleKey}, slices.Collect(maps.Keys(published.Data)), "only the bundle: each pod's Envoy bootstrap is rendered by the webhook")

	require.NoError(t, cluster.Client.CoreV1().ConfigMaps(ns).Delete(context.Background(), wire.TrustBundleConfigMap, metav1.DeleteOptions{}))
	took = harness.WaitFor(t, 10*time.Second, "deleted ConfigMap recreated", bundleIs(ns, srv.CA.BundlePEM()))
	t.Logf("deleted ConfigMap back after %v", took)

	cm, err := bundleConfigMap(ns)
	require.NoError(t, err)
	cm.Data[wire.TrustBundleKey] = "tampered"
	_, err = cluster.Client.CoreV1().ConfigMaps(ns).Update(context.Background(), cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	harness.WaitFor(t, 10*time.Second, "edited ConfigMap restored", bundleIs(ns, srv.CA.BundlePEM()))

	_, err = srv.CA.Rotate()
	require.NoError(t, err)
	require.Len(t, srv.CA.Roots(), 2)
	harness.WaitFor(t, 10*time.Second, "rotation reaches the ConfigMap", bundleIs(ns, srv.CA.BundlePEM()))

	harness.WaitFor(t, 10*time.Second, "ClusterTrustBundle", func() bool {
		ctb, err := cluster.Client.CertificatesV1().ClusterTrustBundles().Get(context.Background(), "certmesh-example.org", metav1.GetOptions{})
		return err == nil && ctb.Spec.TrustBundle == string(srv.CA.BundlePEM())
	})
}
