package catest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
)

// PluginCA is an operator's CA as a plug-in CA Secret holds it: a root and
// a CA certificate issued by it, each with its key, as PEM.
type PluginCA struct {
	Root    *x509.Certificate
	RootKey crypto.Signer
	Cert    *x509.Certificate
	Key     crypto.Signer

	RootPEM, CertPEM, KeyPEM []byte
	// ChainPEM is Istio's cert-chain.pem: the CA certificate, then the root.
	ChainPEM []byte
}

// NewPluginCA makes a root named cn and a CA certificate under it, both
// valid from an hour before Epoch for a year.
func NewPluginCA(t testing.TB, cn string) *PluginCA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(cn+" root", true)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	root, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return (&PluginCA{Root: root, RootKey: key, RootPEM: ca.EncodeCertsPEM(root)}).Issue(t, cn+" ca", true)
}

// Issue is a new certificate under the same root (a CA one when isCA).
func (p *PluginCA) Issue(t testing.TB, cn string, isCA bool) *PluginCA {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, caTemplate(cn, isCA), p.Root, key.Public(), p.RootKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyPEM, err := ca.EncodeKeyPEM(key)
	require.NoError(t, err)
	return &PluginCA{Root: p.Root, RootKey: p.RootKey, Cert: cert, Key: key, RootPEM: p.RootPEM,
		CertPEM: ca.EncodeCertsPEM(cert), KeyPEM: keyPEM, ChainPEM: ca.EncodeCertsPEM(cert, p.Root)}
}

func newKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

func caTemplate(cn string, isCA bool) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	t := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{Organization: []string{"operator"}, CommonName: cn},
		NotBefore: Epoch.Add(-time.Hour), NotAfter: Epoch.Add(365 * 24 * time.Hour),
		BasicConstraintsValid: true, IsCA: isCA,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if !isCA {
		t.KeyUsage = x509.KeyUsageDigitalSignature
	}
	return t
}
