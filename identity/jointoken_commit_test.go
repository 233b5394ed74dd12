package identity

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// slowStore counts writes and takes a little time for each, like a disk.
type slowStore struct {
	saves atomic.Int64
	fail  atomic.Bool
}

func (s *slowStore) Load() ([]byte, error) { return nil, fmt.Errorf("none: %w", errNotExistForTest) }
func (s *slowStore) Save([]byte) error {
	s.saves.Add(1)
	time.Sleep(2 * time.Millisecond)
	if s.fail.Load() {
		return errors.New("disk full")
	}
	return nil
}

var errNotExistForTest = fs.ErrNotExist

// TestRedemptionsAreGroupCommitted: a burst of joins shares writes, every
// redemption is durable before it returns, and a failed write un-redeems
// exactly its batch.
func TestRedemptionsAreGroupCommitted(t *testing.T) {
	t.Parallel()
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("store fails=%v", fail), func(t *testing.T) {
			t.Parallel()
			store := &slowStore{}
			j, err := NewJoinTokens(JoinTokensConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Store: store})
			require.NoError(t, err)
			const n = 200
			toks := make([]string, n)
			for i := range toks {
				toks[i], _, err = j.Create(spiffeid.RequireFromString(fmt.Sprintf("spiffe://example.org/n%d", i)), time.Minute)
				require.NoError(t, err)
			}
			store.saves.Store(0)
			store.fail.Store(fail)
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range toks {
				wg.Add(1)
				go func() { defer wg.Done(); _, errs[i] = j.Attest(context.Background(), Credential{BearerToken: toks[i]}) }()
			}
			wg.Wait()
			require.Less(t, store.saves.Load(), int64(n), "writes are shared")
			store.fail.Store(false)
			for i, e := range errs {
				if fail {
					require.Error(t, e)
					_, again := j.Attest(context.Background(), Credential{BearerToken: toks[i]})
					require.NoError(t, again, "a redemption that was not persisted did not consume the token")
				} else {
					require.NoError(t, e)
				}
			}
		})
	}
}
