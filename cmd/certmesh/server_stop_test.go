package main

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestParseConfigStop: the stop function parseConfig returns ends the
// SIGHUP relay and unloads PKCS#11 modules, once; it once called itself
// until the stack overflowed, at every shutdown.
func TestParseConfigStop(t *testing.T) {
	var sf serverFlags
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	sf.register(fs)
	cfg, _, stop, err := sf.parseConfig(fs, []string{"--trust-domain", "example.org", "--dir", t.TempDir()})
	require.NoError(t, err)
	require.NotNil(t, cfg.CA.OpenKey, "keys named by URI in the state directory can be opened")
	stop()
}
