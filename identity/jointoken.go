package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"
)

const (
	// JoinTokenPrefix starts every join token, so a Chain can tell join
	// tokens from other bearer tokens without a lookup, and so a leaked token
	// is recognisable by secret scanners.
	JoinTokenPrefix = "cmjt."
	// MaxJoinTokenTTL bounds token lifetime: a join token is a bootstrap
	// secret pasted by an operator, not a long-lived credential.
	MaxJoinTokenTTL = 24 * time.Hour

	joinTokenBytes = 32
	// pruneAfter keeps used and expired tokens around a little past expiry
	// so that a replay gets ErrTokenUsed/ErrTokenExpired, not ErrUnknownToken.
	pruneAfter = time.Hour
)

// TokenStore persists join token state. Load returns an error wrapping
// fs.ErrNotExist when nothing was saved yet.
type TokenStore interface {
	Load() ([]byte, error)
	Save([]byte) error
}

// JoinTokensConfig configures NewJoinTokens.
type JoinTokensConfig struct {
	// TrustDomain every token's ID must belong to. Required.
	TrustDomain spiffeid.TrustDomain
	// Clock defaults to clock.RealClock{}.
	Clock clock.PassiveClock
	// Rand is the source of token secrets; defaults to crypto/rand.Reader.
	Rand io.Reader
	// Store persists state across restarts; nil keeps it in memory only.
	Store TokenStore
}

// JoinTokens issues and redeems one-time, expiring join tokens. Only the
// SHA-256 of each token is kept, so the state (and its persisted copy)
// cannot be used to join. Safe for concurrent use.
type JoinTokens struct {
	td    spiffeid.TrustDomain
	clock clock.PassiveClock
	rand  io.Reader
	store TokenStore

	mu     sync.Mutex
	tokens map[string]tokenRecord // keyed by hex SHA-256 of the token
	commit groupCommit
}

var _ Attestor = (*JoinTokens)(nil)

// NewJoinTokens validates cfg, fills defaults and loads persisted state.
func NewJoinTokens(cfg JoinTokensConfig) (*JoinTokens, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("identity: join tokens: trust domain is required")
	}
	j := &JoinTokens{
		td:     cfg.TrustDomain,
		clock:  cfg.Clock,
		rand:   cfg.Rand,
		store:  cfg.Store,
		tokens: map[string]tokenRecord{},
	}
	if j.clock == nil {
		j.clock = clock.RealClock{}
	}
	if j.rand == nil {
		j.rand = rand.Reader
	}
	if err := j.load(); err != nil {
		return nil, err
	}
	return j, nil
}

// Create issues a token that grants id once, until now+ttl.
func (j *JoinTokens) Create(id spiffeid.ID, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 || ttl > MaxJoinTokenTTL {
		return "", time.Time{}, fmt.Errorf("identity: join token ttl %v must be in (0, %v]", ttl, MaxJoinTokenTTL)
	}
	if id.IsZero() || !id.MemberOf(j.td) {
		return "", time.Time{}, fmt.Errorf("identity: join token id %q is outside trust domain %q", id, j.td.Name())
	}
	if IsReserved(id) && !IsNode(id) && !IsDownstream(id) {
		return "", time.Time{}, fmt.Errorf("%w: %q (under %s only node agents' IDs, %s…, and downstream servers', %s…, may be granted)", ErrReservedID, id, ReservedPathPrefix, NodePathPrefix, DownstreamPathPrefix)
	}
	secret := make([]byte, joinTokenBytes)
	if _, err := io.ReadFull(j.rand, secret); err != nil {
		return "", time.Time{}, fmt.Errorf("identity: join token: read random: %w", err)
	}
	token := JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	hash := hashToken(token)

	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.clock.Now()
	expiresAt := now.Add(ttl)
	if _, dup := j.tokens[hash]; dup {
		// Only possible with a broken random source; never overwrite.
		return "", time.Time{}, errors.New("identity: join token: random source repeated a token")
	}
	j.tokens[hash] = tokenRecord{ID: id, ExpiresAt: expiresAt}
	if err := j.saveLocked(now); err != nil {
		delete(j.tokens, hash)
		return "", time.Time{}, err
	}
	return token, expiresAt, nil
}

// Attest redeems a join token from cred.BearerToken. Bearer tokens without
// the join token prefix are not applicable, so other token attestors in a
// Chain can try them. Redemption is atomic: of two concurrent callers with
// the same token exactly one succeeds.
func (j *JoinTokens) Attest(_ context.Context, cred Credential) (Identity, error) {
	if !strings.HasPrefix(cred.BearerToken, JoinTokenPrefix) {
		return Identity{}, ErrNotApplicable
	}
	hash := hashToken(cred.BearerToken)

	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.clock.Now()
	rec, ok := j.tokens[hash]
	switch {
	case !ok:
		return Identity{}, fmt.Errorf("%w", ErrUnknownToken)
	case rec.Used:
		return Identity{}, fmt.Errorf("%w (id %s)", ErrTokenUsed, rec.ID)
	case !now.Before(rec.ExpiresAt):
		return Identity{}, fmt.Errorf("%w at %s (id %s)", ErrTokenExpired, rec.ExpiresAt.UTC().Format(time.RFC3339), rec.ID)
	}
	rec.Used = true
	j.tokens[hash] = rec
	if err := j.commitLocked(hash, now); err != nil {
		return Identity{}, err
	}
	return Identity{ID: rec.ID, Attestor: AttestorJoinToken}, nil
}

// hashToken returns the map key for a token. Looking tokens up by hash
// instead of comparing secrets means no comparison ever touches the secret.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
