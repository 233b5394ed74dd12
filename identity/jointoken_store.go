package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// tokenStateVersion is bumped when the persisted format changes.
const tokenStateVersion = 1

type tokenRecord struct {
	ID        spiffeid.ID
	ExpiresAt time.Time
	Used      bool
}

// tokenState is the persisted form. It holds hashes only, never tokens.
type tokenState struct {
	Version int               `json:"version"`
	Tokens  []persistedRecord `json:"tokens"`
}

type persistedRecord struct {
	Hash      string    `json:"sha256"`
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expiresAt"`
	Used      bool      `json:"used,omitempty"`
}

// loadState decodes what store holds into v (found is false when nothing
// was saved yet), and checks its format version; what names the state in
// errors.
func loadState(store TokenStore, what string, v any, version func() int, want int) (found bool, err error) {
	if store == nil {
		return false, nil
	}
	data, err := store.Load()
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("identity: %s: load: %w", what, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("identity: %s: decode: %w", what, err)
	}
	if got := version(); got != want {
		return false, fmt.Errorf("identity: %s: unsupported state version %d", what, got)
	}
	return true, nil
}

func (j *JoinTokens) load() error {
	var st tokenState
	if _, err := loadState(j.store, "join tokens", &st, func() int { return st.Version }, tokenStateVersion); err != nil {
		return err
	}
	for _, p := range st.Tokens {
		rec, err := j.decodeRecord(p)
		if err != nil {
			return err
		}
		j.tokens[p.Hash] = rec
	}
	return nil
}

func (j *JoinTokens) decodeRecord(p persistedRecord) (tokenRecord, error) {
	if len(p.Hash) != 2*32 {
		return tokenRecord{}, fmt.Errorf("identity: join tokens: bad hash %q", p.Hash)
	}
	id, err := spiffeid.FromString(p.ID)
	if err != nil {
		return tokenRecord{}, fmt.Errorf("identity: join tokens: bad id: %w", err)
	}
	if !id.MemberOf(j.td) {
		return tokenRecord{}, fmt.Errorf("identity: join tokens: id %q is outside trust domain %q", id, j.td.Name())
	}
	return tokenRecord{ID: id, ExpiresAt: p.ExpiresAt, Used: p.Used}, nil
}

// saveLocked prunes long-expired records and persists the rest. j.mu must
// be held.
func (j *JoinTokens) saveLocked(now time.Time) error {
	data, err := j.encodeLocked(now)
	if err != nil || j.store == nil {
		return err
	}
	if err := j.store.Save(data); err != nil {
		return fmt.Errorf("identity: join tokens: save: %w", err)
	}
	return nil
}

// encodeLocked prunes long-expired records and encodes the rest (nil when
// there is no store). j.mu must be held.
func (j *JoinTokens) encodeLocked(now time.Time) ([]byte, error) {
	for h, rec := range j.tokens {
		if now.Sub(rec.ExpiresAt) > pruneAfter {
			delete(j.tokens, h)
		}
	}
	if j.store == nil {
		return nil, nil
	}
	st := tokenState{Version: tokenStateVersion, Tokens: make([]persistedRecord, 0, len(j.tokens))}
	for h, rec := range j.tokens {
		st.Tokens = append(st.Tokens, persistedRecord{Hash: h, ID: rec.ID.String(), ExpiresAt: rec.ExpiresAt, Used: rec.Used})
	}
	data, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("identity: join tokens: encode: %w", err)
	}
	return data, nil
}
