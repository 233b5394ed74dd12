package edge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/acme"
)

// Delay is how long to wait after the given number of consecutive failures (≥1), the
// last of which is err: Min·2^(failures-1) capped at Max, and never less than the
// Retry-After of a rateLimited error, which may exceed Max (the CA's word wins).
func (b Backoff) Delay(now time.Time, failures int, err error) time.Duration {
	b = b.withDefaults()
	d := b.Min
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if ra, ok := retryAfter(now, err); ok && ra > d {
		d = ra
	}
	return d
}

// retryAfter extracts the Retry-After of a rateLimited ACME error, relative to now.
func retryAfter(now time.Time, err error) (time.Duration, bool) {
	var rl *acme.RateLimitedError
	if !errors.As(err, &rl) {
		return 0, false
	}
	return parseRetryAfter(now, rl.RetryAfter)
}

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 §10.2.3). Unlike lego's
// version it takes now from the caller, so it stays testable.
func parseRetryAfter(now time.Time, v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second, true
	}
	if at, err := time.Parse(time.RFC1123, v); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}

// classify wraps a lego error with the sentinel callers branch on, keeping lego's own
// error (and its *acme.ProblemDetails) reachable with errors.As.
func classify(err error) error {
	var pd *acme.ProblemDetails
	if !errors.As(err, &pd) {
		return err
	}
	switch kind := strings.TrimPrefix(pd.Type, "urn:ietf:params:acme:error:"); kind {
	case "rateLimited":
		return fmt.Errorf("%w: %w", ErrRateLimited, err)
	case "rejectedIdentifier":
		return fmt.Errorf("%w: %w", ErrRejectedIdentifier, err)
	case "unauthorized", "connection", "dns", "incorrectResponse", "tls", "caa":
		return fmt.Errorf("%w: %w", ErrChallengeFailed, err)
	}
	return err
}
