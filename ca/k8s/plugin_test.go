package k8s_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	cak8s "github.com/certmesh/certmesh/ca/k8s"
)

var pluginTD = spiffeid.RequireTrustDomainFromString("example.org")

func istioSecret(p *catest.PluginCA) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "certmesh", Name: "cacerts"},
		Data:       map[string][]byte{"ca-cert.pem": p.CertPEM, "ca-key.pem": p.KeyPEM, "root-cert.pem": p.RootPEM, "cert-chain.pem": p.ChainPEM},
	}
}

func tlsSecret(p *catest.PluginCA) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "certmesh", Name: "certmesh-plugin"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": p.CertPEM, "tls.key": p.KeyPEM, "ca.crt": p.RootPEM},
	}
}

func TestReadPlugin(t *testing.T) {
	good := catest.NewPluginCA(t, "op")
	other := catest.NewPluginCA(t, "other")
	leaf := good.Issue(t, "not a ca", false)
	tests := []struct {
		name   string
		secret *corev1.Secret
		format cak8s.PluginFormat
		// wantErr is the error's text: it must name the Secret and the key.
		wantErr string
	}{
		{name: "istio cacerts", secret: istioSecret(good)},
		{name: "istio cacerts, format given", secret: istioSecret(good), format: cak8s.PluginIstio},
		{name: "kubernetes.io/tls with ca.crt", secret: tlsSecret(good)},
		{name: "tls.crt with its chain after it", secret: func() *corev1.Secret {
			s := tlsSecret(good)
			s.Data["tls.crt"] = good.ChainPEM
			return s
		}()},
		{name: "istio: key of another CA", secret: func() *corev1.Secret {
			s := istioSecret(good)
			s.Data["ca-key.pem"] = other.KeyPEM
			return s
		}(), wantErr: `k8s: plug-in CA Secret certmesh/cacerts (istio format): key "ca-key.pem": ca: plug-in CA: key does not match the CA certificate: it is not the key of "CN=op ca,O=operator"`},
		{name: "tls: key of another CA", secret: func() *corev1.Secret {
			s := tlsSecret(good)
			s.Data["tls.key"] = other.KeyPEM
			return s
		}(), wantErr: `k8s: plug-in CA Secret certmesh/certmesh-plugin (tls format): key "tls.key": ca: plug-in CA: key does not match the CA certificate: it is not the key of "CN=op ca,O=operator"`},
		{name: "istio: ca-cert.pem is not a CA", secret: istioSecret(leaf),
			wantErr: `k8s: plug-in CA Secret certmesh/cacerts (istio format): key "ca-cert.pem": ca: plug-in CA: not a CA certificate: "CN=not a ca,O=operator" has no CA basic constraint`},
		{name: "tls: tls.crt is not a CA", secret: tlsSecret(leaf),
			wantErr: `k8s: plug-in CA Secret certmesh/certmesh-plugin (tls format): key "tls.crt": ca: plug-in CA: not a CA certificate: "CN=not a ca,O=operator" has no CA basic constraint`},
		{name: "istio: cert-chain.pem root first", secret: func() *corev1.Secret {
			s := istioSecret(good)
			s.Data["cert-chain.pem"] = ca.EncodeCertsPEM(good.Root, good.Cert)
			return s
		}(), wantErr: `k8s: plug-in CA Secret certmesh/cacerts (istio format): key "cert-chain.pem": ca: plug-in CA: does not chain to the root: must begin with the CA certificate "CN=op ca,O=operator", begins with "CN=op root,O=operator"`},
		{name: "istio: root-cert.pem of another CA", secret: func() *corev1.Secret {
			s := istioSecret(good)
			s.Data["root-cert.pem"] = other.RootPEM
			return s
		}(), wantErr: `k8s: plug-in CA Secret certmesh/cacerts (istio format): key "ca-cert.pem": ca: plug-in CA: does not chain to the root: "CN=op ca,O=operator" (issuer "CN=op root,O=operator") is not issued by any root given (1); certmesh signs under one CA certificate issued by the root directly`},
		{name: "tls: ca.crt missing", secret: func() *corev1.Secret {
			s := tlsSecret(good)
			delete(s.Data, "ca.crt")
			return s
		}(), wantErr: `k8s: plug-in CA Secret certmesh/certmesh-plugin (tls format): key "ca.crt" is missing or empty`},
		{name: "istio format forced on a tls Secret", secret: tlsSecret(good), format: cak8s.PluginIstio,
			wantErr: `k8s: plug-in CA Secret certmesh/certmesh-plugin (istio format): key "root-cert.pem" is missing or empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset(tt.secret)
			a, err := cak8s.ReadPlugin(context.Background(), cak8s.PluginConfig{Client: client, Namespace: "certmesh", Name: tt.secret.Name,
				Format: tt.format, TrustDomain: pluginTD, Clock: clocktesting.NewFakeClock(catest.Epoch)})
			if tt.wantErr != "" {
				require.ErrorIs(t, err, cak8s.ErrPluginSecret)
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.True(t, a.Root.Equal(good.Root))
			require.True(t, a.Intermediate.Equal(good.Cert))
		})
	}
	_, err := cak8s.ReadPlugin(context.Background(), cak8s.PluginConfig{Client: fake.NewClientset(), Namespace: "certmesh", Name: "cacerts", TrustDomain: pluginTD})
	require.ErrorIs(t, err, cak8s.ErrPluginSecret)
}

func TestExpiryWarningAt(t *testing.T) {
	p := catest.NewPluginCA(t, "op") // a year and an hour
	require.Equal(t, p.Cert.NotAfter.Add(-30*24*time.Hour), cak8s.ExpiryWarningAt(p.Cert, cak8s.DefaultPluginWarnBefore))
	short := *p.Cert
	short.NotBefore = short.NotAfter.Add(-4 * 24 * time.Hour)
	require.Equal(t, short.NotAfter.Add(-24*time.Hour), cak8s.ExpiryWarningAt(&short, cak8s.DefaultPluginWarnBefore), "a quarter of a short life")
}

// TestPluginWatcherRollsChanges: the watcher plugs a changed Secret in, and
// a refused one leaves the CA as it was, with the reason in its status.
func TestPluginWatcherRollsChanges(t *testing.T) {
	c := catest.New(t, "example.org")
	p := catest.NewPluginCA(t, "op")
	client := fake.NewClientset(istioSecret(p))
	w, err := cak8s.NewPluginWatcher(cak8s.PluginConfig{Client: client, Namespace: "certmesh", Name: "cacerts", TrustDomain: pluginTD, Clock: c.Clock}, c.CA)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	require.Eventually(t, func() bool { return len(c.Roots()) == 2 }, 5*time.Second, 10*time.Millisecond, "plugged root published")
	require.Equal(t, string(ca.PlugPrepared), w.Status().Outcome)

	bad := istioSecret(p)
	bad.Data["ca-key.pem"] = catest.NewPluginCA(t, "x").KeyPEM
	_, err = client.CoreV1().Secrets("certmesh").Update(ctx, bad, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.Status().Error != "" }, 5*time.Second, 10*time.Millisecond)
	require.Contains(t, w.Status().Error, `key "ca-key.pem"`)
	require.Len(t, c.Roots(), 2, "the CA is unchanged")

	p2 := p.Issue(t, "op ca 2", true)
	_, err = client.CoreV1().Secrets("certmesh").Update(ctx, istioSecret(p2), metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.Status().Outcome == string(ca.PlugIntermediate) }, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, w.Status().Error)
}
