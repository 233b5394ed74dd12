package sds

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewCSRIsWhatX509Makes(t *testing.T) {
	for range 50 { // signatures of varying DER length
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		der, err := newCSR(key)
		require.NoError(t, err)
		csr, err := x509.ParseCertificateRequest(der)
		require.NoError(t, err)
		require.NoError(t, csr.CheckSignature(), "proof of possession")
		require.Equal(t, x509.ECDSAWithSHA256, csr.SignatureAlgorithm)
		require.True(t, key.PublicKey.Equal(csr.PublicKey))
		std, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		require.NoError(t, err)
		want, err := x509.ParseCertificateRequest(std)
		require.NoError(t, err)
		require.Equal(t, want.RawTBSCertificateRequest, csr.RawTBSCertificateRequest, "same request, byte for byte")
	}
}

func TestNewCSROtherKeysGoThroughX509(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{{"p384", p384}, {"rsa", rsaKey}} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := newCSR(tc.key)
			require.NoError(t, err)
			csr, err := x509.ParseCertificateRequest(der)
			require.NoError(t, err)
			require.NoError(t, csr.CheckSignature())
		})
	}
}
