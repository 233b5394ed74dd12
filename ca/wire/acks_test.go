package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"
)

func testDigest() string { d := sha256.Sum256([]byte("bundle")); return hex.EncodeToString(d[:]) }

func TestAckReportValidate(t *testing.T) {
	good := AckReport{Instance: "a1", Bundle: testDigest(), Lagging: 1, Watchers: 3}
	with := func(f func(*AckReport)) AckReport { r := good; f(&r); return r }
	cases := []struct {
		name string
		rep  AckReport
		ok   bool
	}{
		{name: "good", rep: good, ok: true},
		{name: "no watchers", rep: with(func(r *AckReport) { r.Lagging, r.Watchers = 0, 0 }), ok: true},
		{name: "all lagging", rep: with(func(r *AckReport) { r.Lagging = 3 }), ok: true},
		{name: "most watchers", rep: with(func(r *AckReport) { r.Watchers = MaxAckWatchers }), ok: true},
		{name: "negative lagging", rep: with(func(r *AckReport) { r.Lagging = -5 })},
		{name: "negative watchers", rep: with(func(r *AckReport) { r.Lagging, r.Watchers = 0, -1 })},
		{name: "lagging beyond watchers", rep: with(func(r *AckReport) { r.Lagging = 4 })},
		{name: "huge watchers", rep: with(func(r *AckReport) { r.Watchers = MaxAckWatchers + 1 })},
		{name: "huge both", rep: with(func(r *AckReport) { r.Lagging, r.Watchers = math.MaxInt, math.MaxInt })},
		{name: "no instance", rep: with(func(r *AckReport) { r.Instance = "" })},
		{name: "long instance", rep: with(func(r *AckReport) { r.Instance = strings.Repeat("i", 65) })},
		{name: "short bundle", rep: with(func(r *AckReport) { r.Bundle = "abcd" })},
		{name: "upper-case bundle", rep: with(func(r *AckReport) { r.Bundle = strings.ToUpper(testDigest()) })},
		{name: "bundle not hex", rep: with(func(r *AckReport) { r.Bundle = strings.Repeat("zz", 32) })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rep.Validate()
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBadAckReport)
		})
	}
}

// TestDecodeAckReport: counts that are not whole numbers in range, of the
// wrong kind or missing are refused by Validate, never converted.
func TestDecodeAckReport(t *testing.T) {
	good := map[string]any{fieldInstance: "a1", fieldBundle: testDigest(), fieldLagging: 1, fieldWatchers: 3}
	cases := []struct {
		name  string
		field string
		value any // nil: the field is left out
		ok    bool
	}{
		{name: "good", field: fieldLagging, value: 1, ok: true},
		{name: "fraction", field: fieldLagging, value: 0.5},
		{name: "negative", field: fieldLagging, value: -5},
		{name: "NaN", field: fieldWatchers, value: math.NaN()},
		{name: "infinite", field: fieldWatchers, value: math.Inf(1)},
		{name: "beyond int64", field: fieldWatchers, value: 1e300},
		{name: "string", field: fieldWatchers, value: "3"},
		{name: "missing", field: fieldWatchers},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{}
			for k, v := range good {
				m[k] = v
			}
			delete(m, tc.field)
			if tc.value != nil {
				m[tc.field] = tc.value
			}
			in, err := structpb.NewStruct(m)
			require.NoError(t, err)
			err = decodeAckReport(in).Validate()
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBadAckReport)
		})
	}
}

func TestAckReportRoundTrip(t *testing.T) {
	rep := AckReport{Instance: "a1", Bundle: testDigest(), Lagging: 3, Watchers: 7}
	in, err := encodeAckReport(rep)
	require.NoError(t, err)
	require.Equal(t, rep, decodeAckReport(in))
	require.NoError(t, decodeAckReport(in).Validate())
}
