package hostile

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/certmesh/certmesh/test/harness"
)

// TestAttackReservedIDs: a registrations file that claims a node agent's ID
// or the server's stops `certmesh dev` at start, naming file and line
// (the entry would let a local uid act as a node, or as the CA); `certmesh
// token create` refuses the server's ID, and a node agent asking for the
// server's ID is refused (impersonation_denied). The honest file starts, and a node
// token is created and redeemed.
func TestAttackReservedIDs(t *testing.T) {
	for _, id := range []string{"spiffe://example.org/certmesh/node/n2", "spiffe://example.org/certmesh/server"} {
		t.Run(id, func(t *testing.T) {
			web := harness.Workload{ID: webID, UID: uidWeb}
			regs := harness.Registrations(t, "example.org", web, harness.Workload{ID: id, UID: uidDB})
			refusedAtStart(t, "dev", regs, fmt.Sprintf("%s:5: spiffeID %q is reserved", regs, id))

			c := startCA(t, "dev", harness.Registrations(t, "example.org", web))
			out, err := c.tryCLI("token", "create", "--id", "spiffe://example.org/certmesh/server", "--ttl", "5m")
			require.Error(t, err, "a join token for the server's ID: %s", out)
			require.Contains(t, out, "reserved")
			n2 := c.join(t, "spiffe://example.org/certmesh/node/n2") // honest
			c.refused(t, codes.PermissionDenied, "impersonation_denied", func() error {
				_, err := signAs(t, c, n2, "spiffe://example.org/certmesh/server")
				return err
			})
			_, err = signAs(t, c, n2, webID)
			require.NoError(t, err, "n2 may ask for web's identity")
		})
	}
}

// TestAttackUnscopedEntries: `certmesh server`'s file must say which node
// agents may ask for each entry; an entry without nodes stops the start at
// its line, and nodes: ["*"] (any node, on purpose) starts.
func TestAttackUnscopedEntries(t *testing.T) {
	scoped := harness.Workload{ID: webID, UID: uidWeb, Nodes: []string{nodeN1}}
	regs := harness.Registrations(t, "example.org", scoped, harness.Workload{ID: dbID, UID: uidDB})
	refusedAtStart(t, "server", regs, regs+":6: entry lists no nodes: "+dbID)

	c := startCA(t, "server", harness.Registrations(t, "example.org", scoped, harness.Workload{ID: dbID, UID: uidDB, Nodes: []string{"*"}}))
	n1 := c.join(t, nodeN1)
	_, err := signAs(t, c, n1, dbID)
	require.NoError(t, err, "a node may ask for an entry of every node's")
}

// refusedAtStart runs `certmesh cmd` (server or dev) with regs and expects
// it to exit, non-zero, with want in its error.
func refusedAtStart(t *testing.T, cmd, regs, want string) {
	t.Helper()
	p := harness.Start(t, harness.Spec{Name: "certmesh " + cmd, Path: harness.Binary(t), Args: []string{cmd, "--dir", harness.StateDir(t),
		"--trust-domain", "example.org", "--registrations", regs, "--listen", freeAddr(t)}})
	harness.Poll{Timeout: 20 * time.Second, Detail: p.String}.WaitFor(t, "certmesh "+cmd+" to refuse its registrations file", p.Exited)
	require.Error(t, p.Stop())
	require.Contains(t, p.Stderr(), want)
}
