package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

func makeCSR(t testing.TB, key crypto.Signer, uris []string, dns []string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: dns}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		require.NoError(t, err)
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestParseCSRRejectsBadInput(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	good := makeCSR(t, p256, nil, nil)
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-5] ^= 0xff
	manySANs := make([]string, 150)
	for i := range manySANs {
		manySANs[i] = fmt.Sprintf("n%d.example.org", i)
	}
	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{name: "not PEM", in: []byte("hello"), wantErr: ca.ErrCSRNotPEM},
		{name: "PEM but a certificate", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), wantErr: ca.ErrCSRNotPEM},
		{name: "not a CSR", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), wantErr: ca.ErrCSRMalformed},
		{name: "bad signature", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), wantErr: ca.ErrCSRSignature},
		{name: "RSA 1024", in: makeCSR(t, rsa1024, nil, nil), wantErr: ca.ErrWeakKey},
		{name: "RSA 185,000 bits", in: catest.HostileRSACSR(t, 185_000, 65537), wantErr: ca.ErrCSRRSAKey},
		{name: "RSA 4104 bits", in: catest.HostileRSACSR(t, 4104, 65537), wantErr: ca.ErrCSRRSAKey},
		{name: "RSA exponent 3", in: catest.HostileRSACSR(t, 2048, 3), wantErr: ca.ErrCSRRSAKey},
		{name: "RSA huge exponent", in: catest.HostileRSACSR(t, 2048, 1<<31-1), wantErr: ca.ErrCSRRSAKey},
		{name: "curve P-224", in: makeCSR(t, p224, nil, nil), wantErr: ca.ErrCSRCurve},
		{name: "too many SANs", in: makeCSR(t, p256, nil, manySANs), wantErr: ca.ErrCSRTooManySANs},
		{name: "too large", in: make([]byte, ca.MaxCSRBytes+1), wantErr: ca.ErrCSRTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.ParseCSR(tt.in)
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
	_, err := ca.ParseCSR(good)
	require.NoError(t, err)
}

// TestParseCSRAcceptsRSA: the RSA keys real agents send pass.
func TestParseCSRAcceptsRSA(t *testing.T) {
	for _, bits := range []int{2048, 3072, 4096} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		require.NoError(t, err)
		_, err = ca.ParseCSR(makeCSR(t, k, nil, nil))
		require.NoError(t, err, "%d bits", bits)
	}
}

func TestAuthorizeCSR(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	web := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	grant := ca.CSRGrant{ID: web, AllowedDNS: []string{"web.default.svc", "web"}}
	tests := []struct {
		name    string
		uris    []string
		dns     []string
		wantDNS []string
		wantErr error
	}{
		{name: "no SANs gets the grant", wantDNS: []string{"web.default.svc", "web"}},
		{name: "own ID", uris: []string{web.String()}, wantDNS: []string{"web.default.svc", "web"}},
		{name: "subset of DNS", dns: []string{"web"}, wantDNS: []string{"web"}},
		{name: "another identity", uris: []string{"spiffe://example.org/ns/default/sa/db"}, wantErr: ca.ErrCSRIdentity},
		{name: "DNS not owned", dns: []string{"db.default.svc"}, wantErr: ca.ErrCSRDNSNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ca.ParseCSR(makeCSR(t, key, tt.uris, tt.dns))
			require.NoError(t, err)
			p, err := ca.AuthorizeCSR(csr, grant, 0)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, web, p.ID)
			require.Equal(t, tt.wantDNS, p.DNSNames)
		})
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(makeCSR(f, key, []string{"spiffe://example.org/a"}, []string{"a.example.org"}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	grant := ca.CSRGrant{ID: spiffeid.RequireFromString("spiffe://example.org/a"), AllowedDNS: []string{"a.example.org"}}
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := ca.ParseCSR(in)
		if err != nil {
			return
		}
		p, err := ca.AuthorizeCSR(csr, grant, 3600)
		if err == nil && p.ID != grant.ID {
			t.Fatalf("authorized a CSR for %s", p.ID)
		}
	})
}
