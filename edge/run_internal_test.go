package edge

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestChallengeServerBounded: the Internet-facing challenge servers bound
// every phase of a connection, so stalled clients cannot pile up.
func TestChallengeServerBounded(t *testing.T) {
	srv := challengeServer(http.NotFoundHandler())
	require.Positive(t, srv.ReadHeaderTimeout)
	require.Positive(t, srv.ReadTimeout)
	require.Positive(t, srv.WriteTimeout)
	require.Positive(t, srv.IdleTimeout)
	require.Positive(t, srv.MaxHeaderBytes)
}
