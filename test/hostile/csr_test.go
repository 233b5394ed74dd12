package hostile

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/certmesh/certmesh/ca/catest"
)

// TestAttackHugeRSACSR: a CSR with a 185,000-bit RSA key (and one with
// exponent 3) would make the CA spend its CPU on the signature; it is
// refused before (InvalidArgument, csr_rsa_key), promptly, and an honest
// P-256 CSR is signed after each.
func TestAttackHugeRSACSR(t *testing.T) {
	c := startCA(t, "server", "")
	for _, tt := range []struct {
		name    string
		bits, e int
	}{
		{name: "185,000-bit modulus", bits: 185_000, e: 65537},
		{name: "exponent 3", bits: 2048, e: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr := catest.HostileRSACSR(t, tt.bits, tt.e)
			var took time.Duration
			ctx, conn := bearer(c.token(t, "spiffe://example.org/ns/default/sa/big")), c.dial(t, nil)
			c.refused(t, codes.InvalidArgument, "csr_rsa_key", func() error {
				start := time.Now()
				_, err := signCSR(ctx, conn, "", csr, nil)
				took = time.Since(start)
				return err
			})
			t.Logf("%s refused in %s", tt.name, took)
			require.Less(t, took, 5*time.Second, "refused before any costly work")
			_, err := sign(bearer(c.token(t, "spiffe://example.org/ns/default/sa/honest")), c.dial(t, nil), "")
			require.NoError(t, err, "an honest P-256 CSR after the attack")
		})
	}
}
