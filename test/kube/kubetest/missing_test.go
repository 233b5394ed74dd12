package kubetest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMissingBinaries: without the binaries the harness fails with a pointer
// to the script that builds them.
func TestMissingBinaries(t *testing.T) {
	_, err := start(t.TempDir(), WithBinDir(t.TempDir()))
	require.ErrorContains(t, err, "test/tools/kube.sh")
}
