package wire

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAckReportValidate(t *testing.T) {
	bundle := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		rep  AckReport
		ok   bool
	}{
		{name: "well formed", rep: AckReport{Instance: "a1", Bundle: bundle, Lagging: 1, Watchers: 2}, ok: true},
		{name: "negative counts are the CA's to clamp", rep: AckReport{Instance: "a1", Bundle: bundle, Lagging: -1}, ok: true},
		{name: "no instance", rep: AckReport{Bundle: bundle}},
		{name: "instance too long", rep: AckReport{Instance: strings.Repeat("x", 65), Bundle: bundle}},
		{name: "short bundle", rep: AckReport{Instance: "a1", Bundle: "abcd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rep.Validate()
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBadAckReport)
		})
	}
}

func TestAckReportRoundTrip(t *testing.T) {
	rep := AckReport{Instance: "a1", Bundle: strings.Repeat("ab", 32), Lagging: 3, Watchers: 7}
	in, err := encodeAckReport(rep)
	require.NoError(t, err)
	require.Equal(t, rep, decodeAckReport(in))
}
