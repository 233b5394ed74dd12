package secretstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/certmesh/certmesh/edge"
)

func selfSigned(t *testing.T, name string) edge.Served {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "a.example"},
		DNSNames: []string{"a.example"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	sv, err := edge.ParseServed(name,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), []byte("ca"))
	require.NoError(t, err)
	return sv
}

func TestCertificateRoundTrip(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "web-tls", Namespace: "shop"},
		Type:       corev1.SecretTypeTLS, Data: map[string][]byte{"extra": []byte("kept")},
	})
	s, err := New(Config{Client: client, Namespace: "certmesh"})
	require.NoError(t, err)

	for _, tc := range []struct {
		name, cert, wantNS, wantSecret string
	}{
		{name: "qualified, existing secret", cert: "shop/web-tls", wantNS: "shop", wantSecret: "web-tls"},
		{name: "unqualified, new secret", cert: "api", wantNS: "certmesh", wantSecret: "api"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.LoadCertificate(ctx, tc.cert)
			require.ErrorIs(t, err, fs.ErrNotExist)
			require.ErrorIs(t, err, edge.ErrNoCertificate)

			sv := selfSigned(t, tc.cert)
			require.NoError(t, s.SaveCertificate(ctx, sv))
			got, err := s.LoadCertificate(ctx, tc.cert)
			require.NoError(t, err)
			require.Equal(t, sv.CertPEM, got.CertPEM)
			require.True(t, got.Leaf().Equal(sv.Leaf()))

			sec, err := client.CoreV1().Secrets(tc.wantNS).Get(ctx, tc.wantSecret, metav1.GetOptions{})
			require.NoError(t, err)
			require.Equal(t, corev1.SecretTypeTLS, sec.Type)
			require.Equal(t, ManagedBy, sec.Labels[LabelManagedBy])
			require.Equal(t, []byte("ca"), sec.Data["ca.crt"])
		})
	}
	sec, err := client.CoreV1().Secrets("shop").Get(ctx, "web-tls", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, []byte("kept"), sec.Data["extra"], "keys certmesh does not own survive")
}

func TestAccountRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, err := New(Config{Client: fake.NewClientset(), Namespace: "certmesh"})
	require.NoError(t, err)
	_, err = s.LoadAccount(ctx, "le")
	require.True(t, errors.Is(err, fs.ErrNotExist))

	require.NoError(t, s.SaveAccount(ctx, "le", edge.AccountData{KeyPEM: []byte("k")}))
	got, err := s.LoadAccount(ctx, "le")
	require.NoError(t, err)
	require.Equal(t, []byte("k"), got.KeyPEM)
	require.Empty(t, got.Record)

	require.NoError(t, s.SaveAccount(ctx, "le", edge.AccountData{KeyPEM: []byte("k"), Record: []byte("{}")}))
	got, err = s.LoadAccount(ctx, "le")
	require.NoError(t, err)
	require.Equal(t, []byte("{}"), got.Record)
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{Namespace: "x"})
	require.Error(t, err)
}
