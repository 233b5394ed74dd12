package sds_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAgentImportsNoServerCode: the agent talks to the CA through ca/wire
// only. Its packages must not pull in the CA server, the Kubernetes
// attestor or client-go, directly or through anything they import.
func TestAgentImportsNoServerCode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const mod = "github.com/certmesh/certmesh/"
	forbidden := []string{
		mod + "ca", mod + "ca/service", mod + "ca/k8s", mod + "ca/server", mod + "ca/admin", mod + "identity/k8s",
	}
	for _, pkg := range []string{mod + "sds", mod + "sds/envoy", mod + "sds/workload"} {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
			require.NoError(t, err, "%s", out)
			deps := strings.Fields(string(out))
			require.NotEmpty(t, deps)
			for _, dep := range deps {
				require.NotContains(t, forbidden, dep, "%s depends on server code", pkg)
				require.False(t, strings.HasPrefix(dep, "k8s.io/client-go/"), "%s depends on %s", pkg, dep)
			}
		})
	}
}
