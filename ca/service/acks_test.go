package service

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certmesh/certmesh/ca/wire"
)

func digest(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func hexDigest(s string) string { d := digest(s); return hex.EncodeToString(d[:]) }

func newTestRegistry() (*AckRegistry, *clocktesting.FakeClock) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	return &AckRegistry{clock: clk, reports: map[string]ackEntry{}}, clk
}

// TestAckSummaryGateMatchesRegistry: for every bundle asked about, the
// summary answers the gate exactly as the registry it summarizes.
func TestAckSummaryGateMatchesRegistry(t *testing.T) {
	r, _ := newTestRegistry()
	reports := []wire.AckReport{
		{Instance: "a", Bundle: hexDigest("old"), Lagging: 0, Watchers: 3},
		{Instance: "b", Bundle: hexDigest("old"), Lagging: 1, Watchers: 0},
		{Instance: "c", Bundle: hexDigest("new"), Lagging: 2, Watchers: 5},
		{Instance: "d", Bundle: hexDigest("new"), Lagging: 0, Watchers: 4},
		{Instance: "e", Bundle: hexDigest("newer"), Lagging: 0, Watchers: 0},
	}
	for _, rep := range reports {
		require.NoError(t, r.record("spiffe://example.org/node#"+rep.Instance, rep))
	}
	s := r.Summary()
	require.Equal(t, 5, s.Agents())
	require.Equal(t, AckTotals{Agents: 2, Watchers: 9, Lagging: 2, Behind: 9}, s.Bundles[hexDigest("new")])
	require.NoError(t, s.Validate())
	for _, want := range []string{"old", "new", "newer", "unknown"} {
		t.Run(want, func(t *testing.T) {
			ok, lag := r.Gate(digest(want))
			sok, slag := s.Gate(digest(want))
			require.Equal(t, lag, slag)
			require.Equal(t, ok, sok)
		})
	}
	ok, lag := r.Gate(digest("new"))
	require.False(t, ok)
	require.Equal(t, 3+1+2+1, lag, "old: 3 watchers + 1 agent without watchers; new: 2 lagging; newer: 1 agent")
}

func TestAckSummaryEmptyAndExpired(t *testing.T) {
	r, clk := newTestRegistry()
	ok, lag := r.Summary().Gate(digest("x"))
	require.True(t, ok)
	require.Zero(t, lag)
	require.NoError(t, r.record("n#1", wire.AckReport{Instance: "1", Bundle: hexDigest("old"), Watchers: 2}))
	require.Equal(t, 1, r.Summary().Agents())
	clk.Step(wire.AckLiveness + time.Second)
	require.Zero(t, r.Summary().Agents(), "an agent silent for AckLiveness is not summarized")
	b, err := json.Marshal(r.Summary())
	require.NoError(t, err)
	require.JSONEq(t, `{}`, string(b))
}

// TestAckSummaryFolds: beyond MaxSummaryBundles, the bundles fewest agents
// hold are folded into Other, which counts as behind whatever is wanted:
// the gate may stay closed longer, never open early.
func TestAckSummaryFolds(t *testing.T) {
	r, _ := newTestRegistry()
	const extra = 3
	for i := range MaxSummaryBundles + extra {
		// Bundle i is held by i+1 agents, so bundles 0..extra-1 are folded.
		for j := range i + 1 {
			inst := fmt.Sprintf("%d-%d", i, j)
			require.NoError(t, r.record("n#"+inst, wire.AckReport{Instance: inst, Bundle: hexDigest(fmt.Sprint(i)), Watchers: 1}))
		}
	}
	s := r.Summary()
	require.Len(t, s.Bundles, MaxSummaryBundles)
	require.Equal(t, AckTotals{Agents: 1 + 2 + 3, Watchers: 6, Behind: 6}, s.Other)
	require.NoError(t, s.Validate())

	total := s.Agents()
	kept := fmt.Sprint(MaxSummaryBundles + extra - 1)
	_, lag := s.Gate(digest(kept))
	_, exact := r.Gate(digest(kept))
	require.Equal(t, exact, lag, "a listed bundle is answered exactly")
	_, lag = s.Gate(digest("0"))
	require.Equal(t, total, lag, "a folded bundle counts as behind: conservative")
	_, exact = r.Gate(digest("0"))
	require.Greater(t, lag, exact)
}

func TestAckSummaryClampsNegativeCounts(t *testing.T) {
	r, _ := newTestRegistry()
	require.NoError(t, r.record("n#1", wire.AckReport{Instance: "1", Bundle: hexDigest("new"), Lagging: -5, Watchers: -1}))
	require.NoError(t, r.record("n#2", wire.AckReport{Instance: "2", Bundle: hexDigest("new"), Lagging: 2, Watchers: 2}))
	s := r.Summary()
	require.NoError(t, s.Validate())
	_, lag := s.Gate(digest("new"))
	require.Equal(t, 2, lag, "a negative count does not cancel another agent's lag")
}

// TestAckRegistryGateClampsNegativeCounts: the registry's own gate clamps
// as its summary does, so a negative count cannot open it early.
func TestAckRegistryGateClampsNegativeCounts(t *testing.T) {
	r, _ := newTestRegistry()
	require.NoError(t, r.record("n#1", wire.AckReport{Instance: "1", Bundle: hexDigest("new"), Lagging: -5, Watchers: -1}))
	require.NoError(t, r.record("n#2", wire.AckReport{Instance: "2", Bundle: hexDigest("new"), Lagging: 2, Watchers: 2}))
	require.NoError(t, r.record("n#3", wire.AckReport{Instance: "3", Bundle: hexDigest("old"), Watchers: -4}))
	ok, lag := r.Gate(digest("new"))
	require.False(t, ok)
	require.Equal(t, 2+1, lag, "new: 2 lagging, the negative count ignored; old: 1 agent behind")
}

func TestAckSummaryValidate(t *testing.T) {
	good := hexDigest("x")
	many := map[string]AckTotals{}
	for i := range MaxSummaryBundles + 1 {
		many[hexDigest(fmt.Sprint(i))] = AckTotals{Agents: 1}
	}
	cases := []struct {
		name string
		s    AckSummary
		ok   bool
	}{
		{name: "empty", s: AckSummary{}, ok: true},
		{name: "one", s: AckSummary{Bundles: map[string]AckTotals{good: {Agents: 1, Behind: 1}}}, ok: true},
		{name: "short digest", s: AckSummary{Bundles: map[string]AckTotals{"abcd": {}}}},
		{name: "upper-case digest", s: AckSummary{Bundles: map[string]AckTotals{strings.ToUpper(good): {}}}},
		{name: "not hex", s: AckSummary{Bundles: map[string]AckTotals{strings.Repeat("zz", 32): {}}}},
		{name: "negative", s: AckSummary{Bundles: map[string]AckTotals{good: {Lagging: -1}}}},
		{name: "huge", s: AckSummary{Bundles: map[string]AckTotals{good: {Behind: maxSummaryCount + 1}}}},
		{name: "negative other", s: AckSummary{Other: AckTotals{Agents: -1}}},
		{name: "too many bundles", s: AckSummary{Bundles: many}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate()
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBadAckSummary)
		})
	}
}
