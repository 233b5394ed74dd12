// Package sds is the certmesh agent: it generates workload keys where they
// are used, gets them signed by the CA, keeps every SVID fresh (rotation at
// about half its life, with jitter), follows the CA's trust bundle, and hands
// all of it to Envoy over SDS and to any program over the SPIFFE Workload API
// on one unix socket.
package sds

import (
	"math"
	"time"
)

// Rotation at half the lifetime leaves the other half to ride out a CA
// outage; the ±10% jitter spreads a fleet started together.
const (
	rotateFraction = 0.5
	rotateJitter   = 0.1
)

// RotateAt is when an SVID issued at issuedAt and expiring at notAfter should
// be renewed. jitter in [-1, 1] moves it by up to ±10% of the half-life.
func RotateAt(issuedAt, notAfter time.Time, jitter float64) time.Time {
	jitter = math.Max(-1, math.Min(1, jitter))
	life := notAfter.Sub(issuedAt)
	frac := rotateFraction * (1 + rotateJitter*jitter)
	return issuedAt.Add(time.Duration(float64(life) * frac))
}

// Backoff bounds for retrying the CA.
const (
	BackoffBase = 500 * time.Millisecond
	BackoffCap  = 30 * time.Second
)

// Backoff is the wait before retry number attempt (0-based): exponential from
// BackoffBase, capped at BackoffCap, scaled by jitter in [0, 1) to between
// half and all of it so that agents cut off together do not return together.
func Backoff(attempt int, jitter float64) time.Duration {
	d := BackoffCap
	if attempt < 16 {
		d = min(BackoffBase<<attempt, BackoffCap)
	}
	jitter = math.Max(0, math.Min(1, jitter))
	return time.Duration(float64(d) * (0.5 + 0.5*jitter))
}

// NextAttempt is when to try again after a failure: after the backoff, but
// never after the current SVID expires (a last try then), so an SVID is not
// dropped any later than necessary.
func NextAttempt(now, expiry time.Time, backoff time.Duration) time.Time {
	next := now.Add(backoff)
	if !expiry.IsZero() && expiry.After(now) && next.After(expiry) {
		return expiry
	}
	return next
}
