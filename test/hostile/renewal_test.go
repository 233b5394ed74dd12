package hostile

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/certmesh/certmesh/test/harness"
)

// Uids of the workloads; the suite runs as root to start them.
const (
	uidWeb = 4701
	uidDB  = 4702
)

// TestAttackRenewAfterEntryRemoved: an attacker holds db's SVID and key,
// fetched as db's workload would (go-spiffe's client on the dev socket, as
// db's uid). Once db is removed from the registrations file, renewing with
// that SVID over mTLS and asking the CA's listener for a JWT-SVID are both
// refused (not_granted); web, still registered, renews.
func TestAttackRenewAfterEntryRemoved(t *testing.T) {
	web := harness.Workload{ID: webID, UID: uidWeb}
	db := harness.Workload{ID: dbID, UID: uidDB}
	regs := harness.Registrations(t, "example.org", web, db)
	c := startCA(t, "dev", regs)
	webSVID := workloadSVID(t, uidWeb, c.socket)
	dbSVID := workloadSVID(t, uidDB, c.socket)
	require.Equal(t, dbID, dbSVID.ID.String())
	dbConn, webConn := c.dial(t, dbSVID), c.dial(t, webSVID)
	_, err := sign(context.Background(), dbConn, "")
	require.NoError(t, err, "db renews while it is registered")

	harness.WriteRegistrations(t, regs, "example.org", web)
	require.NoError(t, c.Signal(syscall.SIGHUP))
	harness.Poll{Timeout: 10 * time.Second, Every: 200 * time.Millisecond, Detail: c.String}.WaitFor(t, "db's renewal refused once db is removed", func() bool {
		_, err := sign(context.Background(), dbConn, "")
		return err != nil
	})

	c.refused(t, codes.PermissionDenied, "not_granted", func() error {
		_, err := sign(context.Background(), dbConn, "")
		return err
	})
	_, err = sign(context.Background(), webConn, "")
	require.NoError(t, err, "web still renews")

	c.refused(t, codes.PermissionDenied, "not_granted", func() error {
		_, err := fetchJWT(dbConn)
		return err
	})
	tok, err := fetchJWT(webConn)
	require.NoError(t, err, "web still gets JWT-SVIDs")
	require.NotEmpty(t, tok)
}

// fetchJWT asks the CA's listener for the caller's JWT-SVID, as an agent
// does for its workloads.
func fetchJWT(conn *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	resp, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"spiffe://example.org/ns/default/sa/peer"}})
	if err != nil {
		return "", err
	}
	if len(resp.GetSvids()) == 0 {
		return "", errors.New("no JWT-SVID in the answer")
	}
	return resp.GetSvids()[0].GetSvid(), nil
}
