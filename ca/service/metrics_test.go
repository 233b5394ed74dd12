package service_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	pb "istio.io/api/security/v1alpha1"
)

func TestSigningLatencyObservedPerIssuedSVID(t *testing.T) {
	f := newFixture(t)
	for i := range 2 {
		token, _, err := f.tokens.Create(spiffeid.RequireFromString("spiffe://example.org/vm/db1"), 10*time.Minute)
		require.NoError(t, err)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err = f.dial(t, nil).CreateCertificate(bearer(token), &pb.IstioCertificateRequest{Csr: csrPEM(t, key, "")})
		require.NoError(t, err)
		var m dto.Metric
		require.NoError(t, f.metrics.Signing().Write(&m))
		require.Equal(t, uint64(i+1), m.GetHistogram().GetSampleCount())
	}
	// A refused request is not a signing.
	_, err := f.dial(t, nil).CreateCertificate(bearer("cmjt.bogus"), &pb.IstioCertificateRequest{})
	require.Error(t, err)
	var m dto.Metric
	require.NoError(t, f.metrics.Signing().Write(&m))
	require.Equal(t, uint64(2), m.GetHistogram().GetSampleCount())
}
