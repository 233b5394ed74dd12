package workload

import (
	"os"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/ca/catest"
	"github.com/certmesh/certmesh/identity"
)

// FuzzValidateJWTSVID feeds arbitrary tokens and audiences to the handler:
// it must never panic, a refusal is always InvalidArgument, and anything it
// accepts names the caller's trust domain.
func FuzzValidateJWTSVID(f *testing.F) {
	uid := uint32(os.Getuid())
	src := newFakeSource(f)
	h, err := New(Config{Source: src, Attestor: &identity.PeerAttestor{Registrations: registrations(f, int(uid))}})
	require.NoError(f, err)

	valid := jwt.Claims{Subject: webID, Audience: jwt.Audience{"db"}, Expiry: jwt.NewNumericDate(catest.Epoch.Add(time.Hour))}
	f.Add(sign(f, src.testKey, testKID, valid), "db")
	f.Add(sign(f, src.testKey, testKID, valid), "web")
	f.Add("not.a.jwt", "db")
	f.Add("", "")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93ZWIifQ.", "db")
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6InRlc3Qta2lkIn0.e30.AAAA", "web")

	f.Fuzz(func(t *testing.T, svid, audience string) {
		resp, err := h.ValidateJWTSVID(callerCtx(uid), &workloadpb.ValidateJWTSVIDRequest{Svid: svid, Audience: audience})
		if err != nil {
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			return
		}
		require.Contains(t, resp.GetSpiffeId(), "spiffe://example.org/")
	})
}
