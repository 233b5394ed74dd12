package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"
)

var (
	testTD    = spiffeid.RequireTrustDomainFromString("example.org")
	testAgent = spiffeid.RequireFromString("spiffe://example.org/agent/node-1")
	testStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

// memStore is an in-memory TokenStore that can be told to fail.
type memStore struct {
	mu      sync.Mutex
	data    []byte
	loadErr error
	saveErr error
}

func (m *memStore) Load() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loadErr != nil {
		return nil, m.loadErr
	}
	if m.data == nil {
		return nil, fmt.Errorf("mem: %w", fs.ErrNotExist)
	}
	return bytes.Clone(m.data), nil
}

func (m *memStore) Save(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.saveErr != nil {
		return m.saveErr
	}
	m.data = bytes.Clone(b)
	return nil
}

func newTestJoinTokens(t *testing.T, clk *clocktesting.FakePassiveClock, store TokenStore) *JoinTokens {
	t.Helper()
	j, err := NewJoinTokens(JoinTokensConfig{TrustDomain: testTD, Clock: clk, Store: store})
	require.NoError(t, err)
	return j
}

func TestNewJoinTokensConfig(t *testing.T) {
	_, err := NewJoinTokens(JoinTokensConfig{})
	require.Error(t, err)

	j, err := NewJoinTokens(JoinTokensConfig{TrustDomain: testTD})
	require.NoError(t, err)
	tok, _, err := j.Create(testAgent, time.Minute)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(tok, JoinTokenPrefix))

	_, err = NewJoinTokens(JoinTokensConfig{TrustDomain: testTD, Store: &memStore{loadErr: errors.New("disk on fire")}})
	require.Error(t, err)
	_, err = NewJoinTokens(JoinTokensConfig{TrustDomain: testTD, Store: &memStore{data: []byte("{")}})
	require.Error(t, err)
	_, err = NewJoinTokens(JoinTokensConfig{TrustDomain: testTD, Store: &memStore{data: []byte(`{"version":9}`)}})
	require.Error(t, err)
}

func TestJoinTokenCreate(t *testing.T) {
	tests := []struct {
		name    string
		id      spiffeid.ID
		ttl     time.Duration
		wantErr bool
	}{
		{name: "ok", id: testAgent, ttl: time.Hour},
		{name: "max ttl", id: testAgent, ttl: MaxJoinTokenTTL},
		{name: "zero ttl", id: testAgent, ttl: 0, wantErr: true},
		{name: "negative ttl", id: testAgent, ttl: -time.Second, wantErr: true},
		{name: "ttl too long", id: testAgent, ttl: MaxJoinTokenTTL + time.Nanosecond, wantErr: true},
		{name: "other trust domain", id: spiffeid.RequireFromString("spiffe://other.org/a"), ttl: time.Hour, wantErr: true},
		{name: "zero id", ttl: time.Hour, wantErr: true},
		{name: "the server's ID", id: spiffeid.RequireFromString("spiffe://example.org/certmesh/server"), ttl: time.Hour, wantErr: true},
		{name: "reserved path", id: spiffeid.RequireFromString("spiffe://example.org/certmesh/x"), ttl: time.Hour, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := newTestJoinTokens(t, clocktesting.NewFakePassiveClock(testStart), nil)
			tok, exp, err := j.Create(tt.id, tt.ttl)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, testStart.Add(tt.ttl), exp)
			raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, JoinTokenPrefix))
			require.NoError(t, err)
			require.Len(t, raw, 32)
		})
	}
}

func TestJoinTokenUsesInjectedRand(t *testing.T) {
	j, err := NewJoinTokens(JoinTokensConfig{
		TrustDomain: testTD,
		Clock:       clocktesting.NewFakePassiveClock(testStart),
		Rand:        bytes.NewReader(make([]byte, 32)),
	})
	require.NoError(t, err)
	tok, _, err := j.Create(testAgent, time.Hour)
	require.NoError(t, err)
	require.Equal(t, JoinTokenPrefix+strings.Repeat("A", 43), tok)

	_, _, err = j.Create(testAgent, time.Hour) // reader exhausted
	require.Error(t, err)
}

func TestJoinTokenAttest(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(testStart)
	j := newTestJoinTokens(t, clk, nil)
	tok, exp, err := j.Create(testAgent, time.Hour)
	require.NoError(t, err)
	expiring, _, err := j.Create(testAgent, time.Minute)
	require.NoError(t, err)

	tests := []struct {
		name    string
		advance time.Duration // clock step before the call
		token   string
		wantErr error
	}{
		{name: "no token", token: "", wantErr: ErrNotApplicable},
		{name: "other token kind", token: "eyJhbGciOi.x.y", wantErr: ErrNotApplicable},
		{name: "unknown", token: JoinTokenPrefix + "nope", wantErr: ErrUnknownToken},
		{name: "valid", token: tok},
		{name: "replay", token: tok, wantErr: ErrTokenUsed},
		{name: "expired at exact expiry", advance: time.Minute, token: expiring, wantErr: ErrTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.SetTime(clk.Now().Add(tt.advance))
			got, err := j.Attest(ctx, Credential{BearerToken: tt.token})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				if tt.token != "" {
					require.NotContains(t, err.Error(), tt.token, "errors must not leak tokens")
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, Identity{ID: testAgent, Attestor: AttestorJoinToken}, got)
		})
	}
	require.Equal(t, testStart.Add(time.Hour), exp)
}

func TestJoinTokenPrune(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(testStart)
	store := &memStore{}
	j := newTestJoinTokens(t, clk, store)
	tok, _, err := j.Create(testAgent, time.Minute)
	require.NoError(t, err)

	clk.SetTime(testStart.Add(time.Minute + pruneAfter))
	_, err = j.Attest(ctx, Credential{BearerToken: tok})
	require.ErrorIs(t, err, ErrTokenExpired, "kept until an hour past expiry")

	clk.SetTime(testStart.Add(time.Minute + pruneAfter + time.Second))
	_, _, err = j.Create(testAgent, time.Minute) // any write prunes
	require.NoError(t, err)
	_, err = j.Attest(ctx, Credential{BearerToken: tok})
	require.ErrorIs(t, err, ErrUnknownToken)
	require.Equal(t, 1, strings.Count(string(store.data), `"sha256"`))
}

func TestJoinTokenPersistence(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(testStart)
	store := &memStore{}
	j := newTestJoinTokens(t, clk, store)
	used, _, err := j.Create(testAgent, time.Hour)
	require.NoError(t, err)
	unused, _, err := j.Create(testAgent, time.Hour)
	require.NoError(t, err)
	_, err = j.Attest(ctx, Credential{BearerToken: used})
	require.NoError(t, err)

	for _, tok := range []string{used, unused} {
		secret := strings.TrimPrefix(tok, JoinTokenPrefix)
		require.NotContains(t, string(store.data), secret, "state must hold hashes only")
	}

	restarted := newTestJoinTokens(t, clk, store)
	_, err = restarted.Attest(ctx, Credential{BearerToken: used})
	require.ErrorIs(t, err, ErrTokenUsed)
	got, err := restarted.Attest(ctx, Credential{BearerToken: unused})
	require.NoError(t, err)
	require.Equal(t, testAgent, got.ID)
}

func TestJoinTokenSaveFailure(t *testing.T) {
	ctx := context.Background()
	store := &memStore{}
	j := newTestJoinTokens(t, clocktesting.NewFakePassiveClock(testStart), store)
	tok, _, err := j.Create(testAgent, time.Hour)
	require.NoError(t, err)

	store.saveErr = errors.New("disk full")
	_, _, err = j.Create(testAgent, time.Hour)
	require.ErrorIs(t, err, store.saveErr)
	_, err = j.Attest(ctx, Credential{BearerToken: tok})
	require.ErrorIs(t, err, store.saveErr)

	store.saveErr = nil
	_, err = j.Attest(ctx, Credential{BearerToken: tok})
	require.NoError(t, err, "a redemption that was not persisted did not consume the token")
}

func TestJoinTokenConcurrentRedeem(t *testing.T) {
	j := newTestJoinTokens(t, clocktesting.NewFakePassiveClock(testStart), &memStore{})
	tok, _, err := j.Create(testAgent, time.Hour)
	require.NoError(t, err)

	const n = 16
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := j.Attest(context.Background(), Credential{BearerToken: tok})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		if err == nil {
			wins++
			continue
		}
		require.ErrorIs(t, err, ErrTokenUsed)
	}
	require.Equal(t, 1, wins)
}
