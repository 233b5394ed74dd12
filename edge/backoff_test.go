package edge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/stretchr/testify/require"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 5 * time.Second, Max: 4 * time.Hour}
	rateLimited := func(ra string) error {
		return fmt.Errorf("wrapped: %w", &acme.RateLimitedError{
			ProblemDetails: &acme.ProblemDetails{Type: acme.RateLimitedErr}, RetryAfter: ra,
		})
	}
	tests := []struct {
		name     string
		failures int
		err      error
		want     time.Duration
	}{
		{name: "first failure", failures: 1, err: errors.New("x"), want: 5 * time.Second},
		{name: "doubles", failures: 4, err: errors.New("x"), want: 40 * time.Second},
		{name: "capped", failures: 40, err: errors.New("x"), want: 4 * time.Hour},
		{name: "retry-after seconds wins", failures: 1, err: rateLimited("120"), want: 2 * time.Minute},
		{name: "retry-after date", failures: 1, err: rateLimited(t0.Add(time.Hour).Format(time.RFC1123)), want: time.Hour},
		{name: "retry-after above cap", failures: 1, err: rateLimited("86400"), want: 24 * time.Hour},
		{name: "retry-after shorter than backoff", failures: 5, err: rateLimited("1"), want: 80 * time.Second},
		{name: "garbage retry-after", failures: 1, err: rateLimited("soon"), want: 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, b.Delay(t0, tc.failures, tc.err))
		})
	}
}

func TestClassify(t *testing.T) {
	problem := func(kind string) error {
		return fmt.Errorf("lego: %w", &acme.ProblemDetails{Type: "urn:ietf:params:acme:error:" + kind})
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{name: "rate limited", err: problem("rateLimited"), want: ErrRateLimited},
		{name: "rejected", err: problem("rejectedIdentifier"), want: ErrRejectedIdentifier},
		{name: "connection", err: problem("connection"), want: ErrChallengeFailed},
		{name: "dns", err: problem("dns"), want: ErrChallengeFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.err)
			require.ErrorIs(t, got, tc.want)
			var pd *acme.ProblemDetails
			require.ErrorAs(t, got, &pd, "lego's problem stays reachable")
		})
	}
	require.Equal(t, "plain", classify(errors.New("plain")).Error())
}

func TestOrderLocks(t *testing.T) {
	dir := t.TempDir()
	a, b := newOrderLocks(dir), newOrderLocks(dir) // b plays a second process
	key := lockKey("le", []string{"B.test", "a.test"})
	require.Equal(t, key, lockKey("le", []string{"a.test", "b.test"}), "order and case do not matter")

	unlock, err := a.tryLock(key)
	require.NoError(t, err)
	_, err = a.tryLock(key)
	require.ErrorIs(t, err, ErrOrderInProgress)
	_, err = b.tryLock(key)
	require.ErrorIs(t, err, ErrOrderInProgress)
	other, err := b.tryLock(lockKey("le", []string{"c.test"}))
	require.NoError(t, err)
	other()
	unlock()
	again, err := b.tryLock(key)
	require.NoError(t, err)
	again()
}
