package e2e

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/certmesh/certmesh/test/harness"
)

var demoFor = flag.Duration("e2e.demo-for", time.Hour, "TestDemo: stop after this long even without Ctrl-C")

// TestDemo is `make run` with Pebble: the whole chain on one machine, left
// running with a curl line a person can paste. Run it with
//
//	go test -count=1 -v -timeout 0 -run '^TestDemo$' ./test/e2e -e2e.demo
func TestDemo(t *testing.T) {
	if !*demo {
		t.Skip("the demo runs only with -e2e.demo")
	}
	c := startChain(t, chainOpts{})
	_, port, _ := net.SplitHostPort(c.edge)
	fmt.Printf(`
certmesh demo: browser → edge TLS (Pebble-issued certificate for %[1]s) → gateway
(mTLS with its SVID) → backend sidecar (accepts only %[2]s) → app on loopback.
Each proxy is ghostunnel running as its own uid; identities come from attestation.

Paste this:

  curl --cacert %[3]s --resolve %[1]s:%[4]s:127.0.0.1 https://%[1]s:%[4]s/

Look inside:

  %[5]s status --dir %[6]s
  curl -s http://%[7]s/metrics | grep ^certmesh_
  SPIFFE_ENDPOINT_SOCKET=%[8]s   (the agent's Workload API)

Ctrl-C stops everything (or it stops by itself after %[9]s).
`, host, gatewayID, c.rootFile, port, harness.Binary(t), c.dir, c.metricsAddr, c.socket, *demoFor)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(*demoFor):
	}
	fmt.Println("certmesh demo: stopping")
}
