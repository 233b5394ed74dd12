package kubetest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmesh/certmesh/test/kube/kubetest"
)

// TestCluster checks what the other integration tests rely on: the
// apiserver starts, TokenRequest issues pod-bound tokens TokenReview accepts
// with the pod in the extra fields, and ClusterTrustBundle is served.
func TestCluster(t *testing.T) {
	c := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ns := c.Namespace(t)
	pod := c.Pod(t, ns, "web-0", "web", map[string]string{"app": "web"})
	token := c.ServiceAccountToken(t, ns, "web", "spiffe://example.org", pod)

	review, err := c.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{"spiffe://example.org"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.True(t, review.Status.Authenticated, review.Status.Error)
	require.Equal(t, "system:serviceaccount:"+ns+":web", review.Status.User.Username)
	require.Equal(t, authenticationv1.ExtraValue{"web-0"}, review.Status.User.Extra["authentication.kubernetes.io/pod-name"])

	resources, err := c.Client.Discovery().ServerResourcesForGroupVersion("certificates.k8s.io/v1")
	require.NoError(t, err)
	names := map[string]bool{}
	for _, r := range resources.APIResources {
		names[r.Name] = true
	}
	require.True(t, names["clustertrustbundles"], "ClusterTrustBundle is GA in %s", kubetest.KubeVersion)

	// A ServiceAccount without RBAC grants may not list secrets.
	sa := kubetest.NewClient(t, c.ServiceAccountConfig(t, ns, "web"))
	_, err = sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	require.Error(t, err)
}
