//go:build cgo

package service_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/ca/pkcs11/pkcs11test"
)

// TestTokenGoneOverGRPC: with the intermediate on a SoftHSM2 token that
// goes away, a renewal is refused Unavailable and counted as
// hsm_unavailable; the caller's SVID stays valid; renewals succeed again
// once the token is back.
func TestTokenGoneOverGRPC(t *testing.T) {
	tk := pkcs11test.NewToken(t, "certmesh-intermediate")
	f := newFixtureOn(t, catest.New(t, "example.org", func(cfg *ca.Config) {
		cfg.IntermediateKeys, cfg.OpenKey = tk.Store(t), tk.Provider.OpenKey
	}))
	id := spiffeid.RequireFromString("spiffe://example.org/vm/db1")
	token, _, err := f.tokens.Create(id, 10*time.Minute)
	require.NoError(t, err)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	resp, err := f.dial(t, nil).CreateCertificate(bearer(token), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, ""), ValidityDuration: 600})
	require.NoError(t, err)
	svid := &x509svid.SVID{ID: id, Certificates: parseChain(t, resp.CertChain)[:2], PrivateKey: key}
	client := f.dial(t, svid)
	renew := func() error {
		_, err := client.CreateCertificate(context.Background(), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
		return err
	}
	require.NoError(t, renew())

	require.NoError(t, os.Rename(tk.Dir, tk.Dir+".away"))
	err = renew()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Equal(t, "CA cannot sign right now", status.Convert(err).Message(), "no detail for the caller")
	require.Equal(t, 1.0, testutil.ToFloat64(f.metrics.Refused("hsm_unavailable")))
	_, _, err = x509svid.Verify(svid.Certificates, f.ca.Bundle())
	require.NoError(t, err, "the SVID held stays valid")

	require.NoError(t, os.Rename(tk.Dir+".away", tk.Dir))
	require.NoError(t, renew(), "signing resumes when the token is back")
}
