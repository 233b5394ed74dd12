package drills

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/catest"
)

// TestDrillClockTrouble: verifiers whose clocks are up to five minutes off
// in either direction accept a fresh SVID (NotBefore is backdated five
// minutes); an SVID is refused once past its NotAfter. (That the agent never
// serves an expired SVID while the CA is down is sds' TestExpiredSVIDIsNeverServed.)
func TestDrillClockTrouble(t *testing.T) {
	c := catest.New(t, "example.org")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf, err := c.Sign(ca.SignParams{PublicKey: key.Public(), ID: spiffeid.RequireFromString("spiffe://example.org/w"), TTL: time.Hour})
	require.NoError(t, err)
	svid := catest.ToSVID(t, leaf, key)
	now := c.Clock.Now()
	skews := []time.Duration{-5 * time.Minute, -time.Minute, 0, time.Minute, 5 * time.Minute}
	for _, skew := range skews {
		_, _, err := x509svid.Verify(svid.Certificates, c.Bundle(), x509svid.WithTime(now.Add(skew)))
		require.NoError(t, err, "a verifier %v off must accept a fresh SVID", skew)
	}
	_, _, err = x509svid.Verify(svid.Certificates, c.Bundle(), x509svid.WithTime(leaf.NotAfter.Add(time.Second)))
	require.Error(t, err, "an expired SVID is refused")
	record(row{Drill: "5. clock trouble", Injected: "verifier clocks -5m, -1m, 0, +1m, +5m; verification just past NotAfter",
		Ops: len(skews) + 1, Failed: 0, MustBeZero: true, Worst: "-", PeakMem: "-",
		Notes: "NotBefore backdated 5 min; expired SVID refused; agent drops an expired SVID even with the CA down (sds tests)"})
}
