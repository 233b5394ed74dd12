package sds_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/sds"
)

func TestRotateAt(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		life   time.Duration
		jitter float64
		want   time.Duration
	}{
		{name: "half life without jitter", life: time.Hour, jitter: 0, want: 30 * time.Minute},
		{name: "earliest", life: time.Hour, jitter: -1, want: 27 * time.Minute},
		{name: "latest", life: time.Hour, jitter: 1, want: 33 * time.Minute},
		{name: "jitter clamped", life: time.Hour, jitter: 7, want: 33 * time.Minute},
		{name: "short life", life: 2 * time.Minute, jitter: 0, want: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, t0.Add(tt.want), sds.RotateAt(t0, t0.Add(tt.life), tt.jitter))
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name    string
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{name: "first, no jitter", attempt: 0, jitter: 1, want: 500 * time.Millisecond},
		{name: "first, most jitter", attempt: 0, jitter: 0, want: 250 * time.Millisecond},
		{name: "doubles", attempt: 3, jitter: 1, want: 4 * time.Second},
		{name: "capped", attempt: 10, jitter: 1, want: 30 * time.Second},
		{name: "huge attempt stays capped", attempt: 1000, jitter: 1, want: 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, sds.Backoff(tt.attempt, tt.jitter))
		})
	}
}

func TestNextAttemptNeverPassesExpiry(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, now.Add(time.Second), sds.NextAttempt(now, now.Add(time.Hour), time.Second))
	require.Equal(t, now.Add(10*time.Second), sds.NextAttempt(now, now.Add(10*time.Second), time.Minute))
	require.Equal(t, now.Add(time.Minute), sds.NextAttempt(now, time.Time{}, time.Minute), "no SVID yet")
}

func TestBusyErrorCarriesAdvice(t *testing.T) {
	err := error(&sds.BusyError{RetryAfter: 500 * time.Millisecond, Err: errors.New("shed")})
	var busy *sds.BusyError
	require.ErrorAs(t, fmt.Errorf("wrapped: %w", err), &busy)
	require.Equal(t, 500*time.Millisecond, busy.RetryAfter)
}
