package edge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"slices"
	"strings"
	"time"
)

// Reason says why NeedsRenewal decided what it did; it is logged and shown in Status.
type Reason string

// Reasons returned by NeedsRenewal.
const (
	ReasonNone         Reason = ""
	ReasonMissing      Reason = "no certificate"
	ReasonExpired      Reason = "expired"
	ReasonRevoked      Reason = "revoked"
	ReasonNamesChanged Reason = "names changed"
	ReasonKeyChanged   Reason = "key type changed"
	ReasonARIWindow    Reason = "ARI window reached"
	ReasonLifetime     Reason = "renewal fraction of lifetime reached"
	ReasonEmergency    Reason = "close to expiry despite ARI"
)

// DefaultRenewalFraction is the share of the lifetime after which a certificate is
// renewed when the CA offers no ARI (Let's Encrypt's own advice: two thirds).
const DefaultRenewalFraction = 2.0 / 3.0

// emergencyFraction of the lifetime left is where an ARI window in the future is no
// longer trusted: a CA bug must not let a certificate expire.
const emergencyFraction = 0.1

// RenewalInfo is what the CA said about one certificate (RFC 9773), or what we learnt
// otherwise (Revoked).
type RenewalInfo struct {
	WindowStart time.Time
	WindowEnd   time.Time
	// Pick is the random instant inside the window chosen once per window, as RFC 9773
	// §4.2 asks, so that clients spread out; the caller chooses it with its rand source.
	Pick    time.Time
	Revoked bool
}

// Want is what the certificate should look like.
type Want struct {
	DNSNames []string
	KeyType  KeyType
	// Fraction overrides DefaultRenewalFraction when in (0,1).
	Fraction float64
}

// NeedsRenewal is the renewal policy, a pure function of now. It reports whether to
// renew now, the instant renewal is (or was) due, and why. Layers, first match wins:
// missing, expired, revoked, names or key type changed → now; then the ARI pick; then
// the lifetime fraction; and an emergency override when little lifetime is left.
func NeedsRenewal(now time.Time, leaf *x509.Certificate, ari *RenewalInfo, want Want) (bool, time.Time, Reason) {
	if reason := mustRenew(now, leaf, ari, want); reason != ReasonNone {
		return true, now, reason
	}
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	emergency := leaf.NotAfter.Add(-time.Duration(float64(lifetime) * emergencyFraction))
	due, reason := scheduled(leaf, ari, want, lifetime)
	if emergency.Before(due) {
		due, reason = emergency, ReasonEmergency
	}
	return !now.Before(due), due, reason
}

// mustRenew returns the reason to renew at once regardless of any schedule.
func mustRenew(now time.Time, leaf *x509.Certificate, ari *RenewalInfo, want Want) Reason {
	switch {
	case leaf == nil:
		return ReasonMissing
	case !now.Before(leaf.NotAfter):
		return ReasonExpired
	case ari != nil && ari.Revoked:
		return ReasonRevoked
	case !sameNames(leaf.DNSNames, want.DNSNames):
		return ReasonNamesChanged
	case want.KeyType != "" && keyTypeOf(leaf) != want.KeyType:
		return ReasonKeyChanged
	}
	return ReasonNone
}

// scheduled is the planned renewal instant: the ARI pick when the CA gave a window,
// else the configured fraction of the lifetime.
func scheduled(leaf *x509.Certificate, ari *RenewalInfo, want Want, lifetime time.Duration) (time.Time, Reason) {
	if ari != nil && !ari.WindowEnd.IsZero() {
		pick := ari.Pick
		if pick.Before(ari.WindowStart) || pick.After(ari.WindowEnd) {
			pick = ari.WindowStart
		}
		return pick, ReasonARIWindow
	}
	fraction := want.Fraction
	if fraction <= 0 || fraction >= 1 {
		fraction = DefaultRenewalFraction
	}
	return leaf.NotBefore.Add(time.Duration(float64(lifetime) * fraction)), ReasonLifetime
}

func sameNames(have, want []string) bool {
	norm := func(in []string) []string {
		out := make([]string, len(in))
		for i, n := range in {
			out[i] = strings.ToLower(strings.TrimSuffix(n, "."))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(norm(have), norm(want))
}

func keyTypeOf(leaf *x509.Certificate) KeyType {
	switch pub := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve == elliptic.P256() {
			return KeyEC256
		}
	case *rsa.PublicKey:
		if pub.N.BitLen() == 2048 {
			return KeyRSA2048
		}
	}
	return KeyType("other")
}
