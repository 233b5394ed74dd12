package kube_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certmesh/certmesh/edge/secretstore"
	"github.com/certmesh/certmesh/test/harness"
)

// TestGatewayReadsOnlyItsEdgeSecret: an ingress gateway's agent, running as
// the gateway's ServiceAccount with a Role that names one Secret, follows
// that Secret (and its updates) for SDS, and is refused any other.
func TestGatewayReadsOnlyItsEdgeSecret(t *testing.T) {
	ctx := context.Background()
	ns := cluster.Namespace(t)
	cli := cluster.Client
	for _, name := range []string{"shop-tls", "other-tls"} {
		_, err := cli.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: []byte("CERT-" + name), corev1.TLSPrivateKeyKey: []byte("KEY-" + name)}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err := cli.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "gateway"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cli.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "gateway-edge"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"shop-tls"}, Verbs: []string{"get", "list", "watch"}}}},
		metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cli.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "gateway-edge"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "gateway-edge"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "gateway", Namespace: ns}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	gw, err := kubernetes.NewForConfig(cluster.ServiceAccountConfig(t, ns, "gateway"))
	require.NoError(t, err)

	w, err := secretstore.NewWatcher(gw, []string{ns + "/shop-tls"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	harness.WaitFor(t, 10*time.Second, "the gateway's edge Secret", func() bool {
		crt, _, ok := w.EdgeCertificate(ns + "/shop-tls")
		return ok && string(crt) == "CERT-shop-tls"
	})

	changed := w.Changed()
	s, err := cli.CoreV1().Secrets(ns).Get(ctx, "shop-tls", metav1.GetOptions{})
	require.NoError(t, err)
	s.Data[corev1.TLSCertKey] = []byte("CERT-renewed")
	_, err = cli.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
	require.NoError(t, err)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("a renewed Secret must wake the SDS streams")
	}
	crt, _, _ := w.EdgeCertificate(ns + "/shop-tls")
	require.Equal(t, "CERT-renewed", string(crt))

	other, err := secretstore.NewWatcher(gw, []string{ns + "/other-tls"}, nil)
	require.NoError(t, err)
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	defer ocancel()
	err = other.Run(octx)
	require.Error(t, err, "the gateway may read only the Secrets its Role names")
	require.True(t, apierrors.IsForbidden(err), "%v", err)
}
