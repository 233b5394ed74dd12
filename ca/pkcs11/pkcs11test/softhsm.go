//go:build cgo

// Package pkcs11test makes a real SoftHSM2 token for tests in one line.
package pkcs11test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/ca/pkcs11"
)

// SoftHSMModule is where Debian's softhsm2 (test/tools/install.sh) puts it.
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// Token is a fresh SoftHSM2 token in a temporary directory.
type Token struct {
	Dir      string // directories.tokendir
	URI      string // pkcs11:token=…?module-path=…&pin-source=file:…
	Provider *pkcs11.Provider
}

// NewToken initialises a SoftHSM2 token labelled "certmesh" whose keys are
// labelled object-…. The module is required: install.sh installs it, so a
// missing one is a broken machine, not a reason to skip.
func NewToken(t testing.TB, object string) *Token {
	t.Helper()
	if _, err := os.Stat(SoftHSMModule); err != nil {
		t.Fatalf("SoftHSM2 is missing (%v): run test/tools/install.sh (apt-get install -y softhsm2)", err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.Mkdir(tokens, 0o700))
	conf := filepath.Join(dir, "softhsm2.conf")
	require.NoError(t, os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600))
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "certmesh", "--pin", "1234", "--so-pin", "5678").CombinedOutput()
	require.NoError(t, err, "softhsm2-util: %s", out)
	pin := filepath.Join(dir, "pin")
	require.NoError(t, os.WriteFile(pin, []byte("1234\n"), 0o600))
	p := pkcs11.NewProvider()
	t.Cleanup(func() { _ = p.Close() })
	return &Token{
		Dir:      tokens,
		URI:      "pkcs11:token=certmesh;object=" + object + "?module-path=" + SoftHSMModule + "&pin-source=file:" + pin,
		Provider: p,
	}
}

// Store is the token's key store; the test fails if it cannot be reached.
func (tk *Token) Store(t testing.TB) *pkcs11.Store {
	t.Helper()
	s, err := tk.Provider.Store(tk.URI)
	require.NoError(t, err)
	return s
}
