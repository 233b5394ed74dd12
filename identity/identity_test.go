package identity

import (
	"context"
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type fakeAttestor struct {
	id    Identity
	err   error
	calls int
}

func (f *fakeAttestor) Attest(context.Context, Credential) (Identity, error) {
	f.calls++
	return f.id, f.err
}

func TestChain(t *testing.T) {
	web := Identity{ID: spiffeid.RequireFromString("spiffe://example.org/web"), Attestor: "a"}
	db := Identity{ID: spiffeid.RequireFromString("spiffe://example.org/db"), Attestor: "b"}
	boom := errors.New("boom")
	tests := []struct {
		name      string
		attestors []*fakeAttestor
		want      Identity
		wantErr   error
		wantCalls []int
	}{
		{name: "empty chain", wantErr: ErrNotApplicable},
		{
			name:      "all not applicable",
			attestors: []*fakeAttestor{{err: ErrNotApplicable}, {err: ErrNotApplicable}},
			wantErr:   ErrNotApplicable,
			wantCalls: []int{1, 1},
		},
		{
			name:      "skips not applicable",
			attestors: []*fakeAttestor{{err: ErrNotApplicable}, {id: db}, {id: web}},
			want:      db,
			wantCalls: []int{1, 1, 0},
		},
		{
			name:      "first success wins",
			attestors: []*fakeAttestor{{id: web}, {id: db}},
			want:      web,
			wantCalls: []int{1, 0},
		},
		{
			name:      "real failure stops the chain",
			attestors: []*fakeAttestor{{err: ErrTokenUsed}, {id: web}},
			wantErr:   ErrTokenUsed,
			wantCalls: []int{1, 0},
		},
		{
			name:      "wrapped not applicable is skipped",
			attestors: []*fakeAttestor{{err: errors.Join(boom, ErrNotApplicable)}, {id: web}},
			want:      web,
			wantCalls: []int{1, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Chain
			for _, a := range tt.attestors {
				c = append(c, a)
			}
			got, err := c.Attest(context.Background(), Credential{BearerToken: "x"})
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
				require.Equal(t, tt.want, got)
			}
			for i, a := range tt.attestors {
				require.Equal(t, tt.wantCalls[i], a.calls, "attestor %d", i)
			}
		})
	}
}
