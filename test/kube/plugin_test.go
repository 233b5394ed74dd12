package kube_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	cak8s "github.com/certmesh/certmesh/ca/k8s"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/test/harness"
	"github.com/certmesh/certmesh/test/kube/kubetest"
)

// pluginSecret is the plug-in CA Secret of format f holding p.
func pluginSecret(ns, name string, f cak8s.PluginFormat, p *catest.PluginCA) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if f == cak8s.PluginIstio {
		s.Data = map[string][]byte{"ca-cert.pem": p.CertPEM, "ca-key.pem": p.KeyPEM, "root-cert.pem": p.RootPEM, "cert-chain.pem": p.ChainPEM}
		return s
	}
	s.Type = corev1.SecretTypeTLS
	s.Data = map[string][]byte{"tls.crt": p.CertPEM, "tls.key": p.KeyPEM, "ca.crt": p.RootPEM}
	return s
}

// startPluginServer runs a replica as the shipped ServiceAccount with
// --plugin-ca-secret name (auto-detected format).
func startPluginServer(t *testing.T, client kubernetes.Interface, ns, name, identity string) *testServer {
	t.Helper()
	srv, err := server.New(server.Config{
		Dir: filepath.Join(t.TempDir(), identity), TrustDomain: td, Listen: "127.0.0.1:0",
		CA: ca.Config{RotationOverlap: 3 * time.Second},
		Kubernetes: &server.KubernetesConfig{
			Client: client, Namespace: ns, Identity: identity, DisableBundlePublication: true,
			LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond,
			AckPeriod: ackPeriod, PluginCA: &server.PluginCAConfig{Secret: name},
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

// pluggedSVID signs an SVID on s and returns it with the CA certificate
// that signed it, after checking it verifies against root alone.
func pluggedSVID(t *testing.T, s *testServer, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf, err := s.CA.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://example.org/ns/app/sa/web"), TTL: time.Hour})
	require.NoError(t, err)
	svid := catest.ToSVID(t, leaf, key)
	_, _, err = x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{root}))
	require.NoError(t, err, "the SVID chains to the plugged root")
	return svid.Certificates[1]
}

func hasRoot(s *testServer, root *x509.Certificate) bool {
	for _, r := range s.CA.Roots() {
		if r.Equal(root) {
			return true
		}
	}
	return false
}

// TestPluginCAIstio: two replicas start from Istio's cacerts and sign under
// its root; the Secret is replaced by a CA under a new root, which is in
// every replica's bundle before it signs and signs after the overlap.
func TestPluginCAIstio(t *testing.T) {
	ns := cluster.Namespace(t)
	applyRBAC(t, ns)
	ctx := context.Background()
	p := catest.NewPluginCA(t, "istio")
	_, err := cluster.Client.CoreV1().Secrets(ns).Create(ctx, pluginSecret(ns, "cacerts", cak8s.PluginIstio, p), metav1.CreateOptions{})
	require.NoError(t, err)

	client := kubetest.NewClient(t, cluster.ServiceAccountConfig(t, ns, "certmesh-server"))
	a := startPluginServer(t, client, ns, "cacerts", "replica-a")
	b := startPluginServer(t, client, ns, "cacerts", "replica-b")
	harness.WaitFor(t, 20*time.Second, "a leader", func() bool { return a.Leader.IsLeader() || b.Leader.IsLeader() })
	for _, s := range []*testServer{a, b} {
		require.True(t, pluggedSVID(t, s, p.Root).Equal(p.Cert), "signed by Istio's ca-cert.pem")
		require.Len(t, s.CA.Roots(), 1)
	}

	next := catest.NewPluginCA(t, "istio-next")
	_, err = cluster.Client.CoreV1().Secrets(ns).Update(ctx, pluginSecret(ns, "cacerts", cak8s.PluginIstio, next), metav1.UpdateOptions{})
	require.NoError(t, err)
	// The overlap is 3 s: the new root is seen in the bundle while the old CA
	// still signs, on the leader that plugged it and on the follower that
	// loaded it from the CA Secret.
	seen := map[*testServer]bool{}
	harness.WaitFor(t, 20*time.Second, "the new root in both replicas' bundles before it signs", func() bool {
		for _, s := range []*testServer{a, b} {
			if !seen[s] && hasRoot(s, next.Root) && s.CA.Status().Phase == "prepared" {
				require.True(t, pluggedSVID(t, s, p.Root).Equal(p.Cert), "published before it signs: the old CA still signs")
				seen[s] = true
			}
		}
		return len(seen) == 2
	})
	harness.WaitFor(t, 30*time.Second, "both replicas signing with the new CA", func() bool {
		for _, s := range []*testServer{a, b} {
			if st := s.CA.Status(); len(st.Authorities) == 0 || st.Phase != "retiring" {
				return false
			}
		}
		return true
	})
	for _, s := range []*testServer{a, b} {
		require.True(t, pluggedSVID(t, s, next.Root).Equal(next.Cert), "signed by the new ca-cert.pem")
		require.True(t, hasRoot(s, p.Root), "the old root stays for its SVIDs")
	}
}

// TestPluginCATLS: one replica starts from a cert-manager style
// kubernetes.io/tls Secret; a new CA certificate under the same root
// signs at once, without a bundle change.
func TestPluginCATLS(t *testing.T) {
	ns := cluster.Namespace(t)
	applyRBAC(t, ns)
	ctx := context.Background()
	p := catest.NewPluginCA(t, "cert-manager")
	_, err := cluster.Client.CoreV1().Secrets(ns).Create(ctx, pluginSecret(ns, "certmesh-plugin", cak8s.PluginTLS, p), metav1.CreateOptions{})
	require.NoError(t, err)
	client := kubetest.NewClient(t, cluster.ServiceAccountConfig(t, ns, "certmesh-server"))
	s := startPluginServer(t, client, ns, "certmesh-plugin", "replica-a")
	harness.WaitFor(t, 20*time.Second, "leader", s.Leader.IsLeader)
	require.True(t, pluggedSVID(t, s, p.Root).Equal(p.Cert))

	renewed := p.Issue(t, "cert-manager ca 2", true)
	_, err = cluster.Client.CoreV1().Secrets(ns).Update(ctx, pluginSecret(ns, "certmesh-plugin", cak8s.PluginTLS, renewed), metav1.UpdateOptions{})
	require.NoError(t, err)
	harness.WaitFor(t, 20*time.Second, "signing with the renewed CA certificate", func() bool {
		return pluggedSVID(t, s, p.Root).Equal(renewed.Cert)
	})
	require.Len(t, s.CA.Roots(), 1, "same root: the bundle did not change")
	st := s.CA.Status()
	require.Equal(t, ca.NotRenewableNoRootKey, st.Authorities[0].NotRenewable)
	require.Equal(t, string(ca.PlugIntermediate), s.Status().Kubernetes.PluginCA.Outcome)
	_, err = s.Rotate()
	require.ErrorIs(t, err, server.ErrPluggedCA, "the roots are the operator's")
}

// TestPluginCAResourceNamesSuffice: rbac.yaml's rule naming only the
// cacerts Secret is enough for the plug-in watcher (get, then list and
// watch by name), and no other Secret is readable with it.
func TestPluginCAResourceNamesSuffice(t *testing.T) {
	ns := cluster.Namespace(t)
	ctx := context.Background()
	rule := pluginRBACRule(t)
	_, err := cluster.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "plugin-only"}, Rules: []rbacv1.PolicyRule{rule}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "plugin-only"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "plugin-only"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "narrow", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	p := catest.NewPluginCA(t, "istio")
	_, err = cluster.Client.CoreV1().Secrets(ns).Create(ctx, pluginSecret(ns, "cacerts", cak8s.PluginIstio, p), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.CoreV1().Secrets(ns).Create(ctx, pluginSecret(ns, "other", cak8s.PluginIstio, p), metav1.CreateOptions{})
	require.NoError(t, err)

	client := kubetest.NewClient(t, cluster.ServiceAccountConfig(t, ns, "narrow"))
	cfg := cak8s.PluginConfig{Client: client, Namespace: ns, Name: "cacerts", TrustDomain: td}
	harness.WaitFor(t, 10*time.Second, "the Role in force", func() bool { _, err := cak8s.ReadPlugin(ctx, cfg); return err == nil })
	other := cfg
	other.Name = "other"
	_, err = cak8s.ReadPlugin(ctx, other)
	require.True(t, apierrors.IsForbidden(err), "%v", err)

	c := catest.New(t, "example.org")
	w, err := cak8s.NewPluginWatcher(cfg, c.CA)
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(wctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	harness.WaitFor(t, 10*time.Second, "the watcher's list and watch allowed", func() bool { return len(c.Roots()) == 2 })
}

// pluginRBACRule is rbac.yaml's Role rule for the plug-in CA Secret.
func pluginRBACRule(t *testing.T) rbacv1.PolicyRule {
	t.Helper()
	for _, obj := range objects(t, filepath.Join(deployDir, "rbac.yaml")) {
		if obj.GetKind() != "Role" {
			continue
		}
		var role rbacv1.Role
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &role))
		for _, r := range role.Rules {
			if slices.Contains(r.ResourceNames, "cacerts") {
				return r
			}
		}
	}
	t.Fatal("rbac.yaml: no Role rule names the cacerts Secret")
	return rbacv1.PolicyRule{}
}
