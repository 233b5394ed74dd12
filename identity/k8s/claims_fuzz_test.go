package k8s

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzParseClaims feeds arbitrary tokens, and arbitrary payloads in a
// well-formed token, to the unverified claims parser that sees every
// ServiceAccount token before the TokenReview. It must never panic; a parse
// that succeeds has a ServiceAccount subject and round-trips (the claims,
// encoded again, parse to the same claims); precheck answers nil, ErrExpired
// or ErrWrongAudience, and nil only for an unexpired token for the audience.
func FuzzParseClaims(f *testing.F) {
	seeds := []string{
		`{"sub":"system:serviceaccount:default:web","aud":["certmesh"],"exp":1900000000,"kubernetes.io":{"namespace":"default","pod":{"name":"web-1","uid":"u-1"}}}`,
		`{"sub":"system:serviceaccount:ns:sa","aud":"certmesh","exp":1}`,
		`{"sub":"system:serviceaccount:ns:sa","aud":null}`,
		`{"sub":"system:serviceaccount:ns:sa","aud":[],"kubernetes.io":{"pod":null}}`,
		`{"sub":"user:alice","aud":["certmesh"]}`,
		`{"sub":"system:serviceaccount:a:b","aud":[1]}`,
		`{"sub":"system:serviceaccount:a:b","exp":1e99}`,
		`{"sub":"system:serviceaccount:a:b"}`, `null`, `[]`, ``,
	}
	for _, s := range seeds {
		f.Add([]byte(s), token([]byte(s)))
	}
	f.Add([]byte(`{}`), "a.b")
	f.Add([]byte(`{}`), "eyJhbGciOiJSUzI1NiJ9.!!!.sig")
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, payload []byte, raw string) {
		for _, tok := range []string{raw, token(payload)} {
			c, err := parseClaims(tok)
			if err != nil {
				require.ErrorIs(t, err, errNotJWT)
				continue
			}
			require.Len(t, strings.Split(tok, "."), 3)
			require.True(t, strings.HasPrefix(c.Subject, saUserPrefix), "subject %q", c.Subject)
			b, err := json.Marshal(c)
			require.NoError(t, err)
			again, err := parseClaims(token(b))
			require.NoError(t, err, "re-encoded claims %s", b)
			require.Equal(t, c, again, "round trip through %s", b)

			err = c.precheck(now, "certmesh")
			switch {
			case err == nil:
				require.Contains(t, []string(c.Audience), "certmesh")
				require.True(t, c.Expiry == 0 || now.Before(c.expiry()))
			case errors.Is(err, ErrExpired):
				require.False(t, now.Before(c.expiry()))
			case errors.Is(err, ErrWrongAudience):
				require.False(t, slices.Contains(c.Audience, "certmesh"))
			default:
				t.Fatalf("precheck: unexpected error %v", err)
			}
		}
	})
}

func token(payload []byte) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(payload) + ".c2ln"
}
