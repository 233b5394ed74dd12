package ingress

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
)

func TestSelfCheck(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The route "propagates" on the third request.
		if hits.Add(1) < 3 || r.URL.Path != "/.well-known/acme-challenge/tok" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("tok.key"))
	}))
	defer srv.Close()
	client := srv.Client()
	// Every host resolves to the test server, as the ingress would route it.
	client.Transport = rewriteHost{to: strings.TrimPrefix(srv.URL, "http://")}
	sc := &selfCheck{client: client, clock: clock.RealClock{}, interval: 5 * time.Millisecond, timeout: 5 * time.Second}

	require.NoError(t, sc.wait(context.Background(), "a.example", "tok", "tok.key"))
	require.EqualValues(t, 3, hits.Load())

	sc.timeout = 50 * time.Millisecond
	err := sc.wait(context.Background(), "a.example", "tok", "other")
	require.ErrorIs(t, err, ErrSelfCheck)
}

// rewriteHost sends every request to one address.
type rewriteHost struct{ to string }

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Host = r.to
	return http.DefaultTransport.RoundTrip(req)
}
