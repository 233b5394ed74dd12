package k8s

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/wire"
)

func TestSecretKeys(t *testing.T) {
	for _, p := range []string{"state.json", "jwt.key", "authorities/0a1b2c3d4e5f/root.crt", "authorities/0a1b2c3d4e5f/intermediate.key", "authorities/0a1b2c3d4e5f/jwt.key"} {
		t.Run(p, func(t *testing.T) {
			got, ok := filePath(secretKey(p))
			require.True(t, ok)
			require.Equal(t, p, got)
		})
	}
}

func TestFromSecretChecksTrustDomain(t *testing.T) {
	cfg := StateConfig{Namespace: "ns", Name: "certmesh-ca", TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")}
	files := ca.Files{"state.json": []byte("{}"), "authorities/ab/root.crt": []byte("x")}
	s := cfg.newSecret(files)
	got, err := fromSecret(s, cfg.TrustDomain)
	require.NoError(t, err)
	require.True(t, sameFiles(files, got))

	_, err = fromSecret(s, spiffeid.RequireTrustDomainFromString("other.org"))
	require.ErrorIs(t, err, ErrTrustDomainMismatch)
	_, err = fromSecret(&corev1.Secret{}, cfg.TrustDomain)
	require.ErrorIs(t, err, ErrTrustDomainMismatch)
}

func TestConfigMapCurrent(t *testing.T) {
	want := []byte("PEM")
	cases := []struct {
		name string
		cm   corev1.ConfigMap
		ok   bool
	}{
		{name: "equal", cm: corev1.ConfigMap{Data: map[string]string{wire.TrustBundleKey: "PEM"}}, ok: true},
		{name: "stale", cm: corev1.ConfigMap{Data: map[string]string{wire.TrustBundleKey: "OLD"}}},
		{name: "extra key", cm: corev1.ConfigMap{Data: map[string]string{wire.TrustBundleKey: "PEM", "x": "y"}}},
		{name: "binary data", cm: corev1.ConfigMap{Data: map[string]string{wire.TrustBundleKey: "PEM"}, BinaryData: map[string][]byte{"x": nil}}},
		{name: "empty", cm: corev1.ConfigMap{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.ok, configMapCurrent(&tc.cm, want)) })
	}
	// An older server published its static Envoy bootstrap beside the bundle;
	// that key is dropped at the next write.
	left := map[string]string{wire.TrustBundleKey: "PEM", "envoy-sidecar.yaml": "static_resources: {}"}
	require.False(t, dataCurrent(&corev1.ConfigMap{Data: left}, map[string]string{wire.TrustBundleKey: "PEM"}), "old bootstrap key left")
}
