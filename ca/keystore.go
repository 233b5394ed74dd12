package ca

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ErrKeyUnavailable means a CA key lives on a token (an HSM) that cannot
// be reached or failed to sign. Signing resumes by itself when it returns.
var ErrKeyUnavailable = errors.New("ca: CA key unavailable (HSM)")

// KeyStore makes CA keys outside the state directory, on a PKCS#11 token
// (ca/pkcs11). The directory then records where each key lives (a
// <key>.uri file holding its URI) and never holds the key.
type KeyStore interface {
	GenerateKey(kt KeyType, rnd io.Reader) (ExternalKey, error)
}

// ExternalKey is a private key held by a KeyStore.
type ExternalKey interface {
	crypto.Signer
	// KeyURI names the key, with no secret in it: it is written to disk.
	KeyURI() string
}

// KeyOpener opens a key recorded by its URI (Config.OpenKey).
type KeyOpener func(uri string) (crypto.Signer, error)

// keyURISuffix is appended to a key file's name for a key on a token.
const keyURISuffix = ".uri"

// ErrNoKeyOpener is returned for a state directory that names a key on a
// token when the CA was given no way to open one.
var ErrNoKeyOpener = errors.New("ca: a CA key is on a token and this CA cannot open tokens")

// ErrNoKeyStore is returned by a renewal that would move a key from a token
// into a file: the CA was started without the token's key store.
var ErrNoKeyStore = errors.New("ca: no key store for a key on a token (start with --intermediate-key-uri)")

// newKey makes a key of type kt: on store when one is set, else in memory.
func newKey(store KeyStore, kt KeyType, rnd io.Reader) (crypto.Signer, error) {
	if store == nil {
		return GenerateKey(kt, rnd)
	}
	return store.GenerateKey(kt, rnd)
}

// keyFile is how key is saved as name: its URI in name.uri when it lives
// on a token, else its PEM in name.
func keyFile(name string, key crypto.Signer) authorityFile {
	if ext, ok := key.(ExternalKey); ok {
		return authorityFile{name + keyURISuffix, func() ([]byte, error) { return []byte(ext.KeyURI() + "\n"), nil }, 0o600}
	}
	return authorityFile{name, func() ([]byte, error) { return EncodeKeyPEM(key) }, 0o600}
}

// readKeyURI opens the key recorded in path (a .uri file).
func readKeyURI(path string, open KeyOpener) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	uri := string(trimSpace(b))
	if open == nil {
		return nil, fmt.Errorf("%w: %s names %s", ErrNoKeyOpener, filepath.Base(path), uri)
	}
	k, err := open(uri)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// destroyKeyOnToken removes from its token the key a retired
// intermediate's .uri file names, when the key can be destroyed. Errors are
// logged: a key left behind is clutter, not a risk to signing.
func (c *CA) destroyKeyOnToken(path string) {
	if !strings.HasSuffix(path, keyURISuffix) || c.cfg.OpenKey == nil {
		return
	}
	k, err := readKeyURI(path, c.cfg.OpenKey)
	if err == nil {
		if d, ok := k.(interface{ Destroy() error }); ok {
			err = d.Destroy()
		}
	}
	if err != nil {
		c.cfg.Logger.Warn("remove retired intermediate key from its token", "file", path, "error", err)
	}
}

func hasFile(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}
