package edge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func leafFor(t *testing.T, kt KeyType, notBefore time.Time, life time.Duration, names ...string) *x509.Certificate {
	t.Helper()
	var pub any
	switch kt {
	case KeyRSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		pub = &k.PublicKey
	default:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		pub = &k.PublicKey
	}
	return &x509.Certificate{
		SerialNumber: big.NewInt(1), DNSNames: names, PublicKey: pub,
		NotBefore: notBefore, NotAfter: notBefore.Add(life),
	}
}

func TestNeedsRenewal(t *testing.T) {
	const day = 24 * time.Hour
	ec := leafFor(t, KeyEC256, t0, 90*day, "a.test", "b.test")
	rsaLeaf := leafFor(t, KeyRSA2048, t0, 90*day, "a.test", "b.test")
	want := Want{DNSNames: []string{"b.test", "A.test"}, KeyType: KeyEC256}
	twoThirds := t0.Add(60 * day)
	window := &RenewalInfo{WindowStart: t0.Add(40 * day), WindowEnd: t0.Add(42 * day), Pick: t0.Add(41 * day)}
	late := &RenewalInfo{WindowStart: t0.Add(89 * day), WindowEnd: t0.Add(90 * day), Pick: t0.Add(89 * day)}

	tests := []struct {
		name   string
		now    time.Time
		leaf   *x509.Certificate
		ari    *RenewalInfo
		want   Want
		renew  bool
		due    time.Time
		reason Reason
	}{
		{name: "missing", now: t0, want: want, renew: true, due: t0, reason: ReasonMissing},
		{name: "fresh without ARI", now: t0.Add(day), leaf: ec, want: want, due: twoThirds, reason: ReasonLifetime},
		{name: "two thirds reached", now: twoThirds, leaf: ec, want: want, renew: true, due: twoThirds, reason: ReasonLifetime},
		{name: "custom fraction", now: t0.Add(day), leaf: ec, want: Want{DNSNames: want.DNSNames, Fraction: 0.5}, due: t0.Add(45 * day), reason: ReasonLifetime},
		{name: "ARI pick ahead", now: t0.Add(day), leaf: ec, ari: window, want: want, due: window.Pick, reason: ReasonARIWindow},
		{name: "ARI pick reached", now: window.Pick, leaf: ec, ari: window, want: want, renew: true, due: window.Pick, reason: ReasonARIWindow},
		{name: "ARI pick outside window uses start", now: t0.Add(day), leaf: ec, ari: &RenewalInfo{WindowStart: window.WindowStart, WindowEnd: window.WindowEnd, Pick: t0}, want: want, due: window.WindowStart, reason: ReasonARIWindow},
		{name: "ARI window in the past", now: t0.Add(day), leaf: ec, ari: &RenewalInfo{WindowStart: t0.Add(-2 * time.Hour), WindowEnd: t0.Add(-time.Hour), Pick: t0.Add(-time.Hour)}, want: want, renew: true, due: t0.Add(-time.Hour), reason: ReasonARIWindow},
		{name: "ARI too late: emergency", now: t0.Add(day), leaf: ec, ari: late, want: want, due: t0.Add(81 * day), reason: ReasonEmergency},
		{name: "revoked", now: t0.Add(day), leaf: ec, ari: &RenewalInfo{Revoked: true}, want: want, renew: true, due: t0.Add(day), reason: ReasonRevoked},
		{name: "expired", now: t0.Add(90 * day), leaf: ec, want: want, renew: true, due: t0.Add(90 * day), reason: ReasonExpired},
		{name: "names changed", now: t0.Add(day), leaf: ec, want: Want{DNSNames: []string{"a.test"}}, renew: true, due: t0.Add(day), reason: ReasonNamesChanged},
		{name: "key type changed", now: t0.Add(day), leaf: rsaLeaf, want: want, renew: true, due: t0.Add(day), reason: ReasonKeyChanged},
		{name: "rsa wanted and held", now: t0.Add(day), leaf: rsaLeaf, want: Want{DNSNames: want.DNSNames, KeyType: KeyRSA2048}, due: twoThirds, reason: ReasonLifetime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			renew, due, reason := NeedsRenewal(tc.now, tc.leaf, tc.ari, tc.want)
			require.Equal(t, tc.renew, renew)
			require.Equal(t, tc.due, due)
			require.Equal(t, tc.reason, reason)
		})
	}
}

// TestNeedsRenewalFakeClock walks a fake clock through a certificate's life.
func TestNeedsRenewalFakeClock(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	leaf := leafFor(t, KeyEC256, t0, 9*time.Hour, "a.test")
	want := Want{DNSNames: []string{"a.test"}}
	var flips int
	for range 10 {
		renew, _, _ := NeedsRenewal(clk.Now(), leaf, nil, want)
		if renew {
			flips++
		}
		clk.Step(time.Hour)
	}
	require.Equal(t, 4, flips, "hours 6,7,8 past two thirds, and 9 expired")
}
