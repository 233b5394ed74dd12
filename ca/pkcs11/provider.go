//go:build cgo

package pkcs11

import (
	"crypto"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/certmesh/certmesh/ca"
)

// Provider loads PKCS#11 modules once per process and hands out key
// stores and keys on their tokens. cmd/ makes one and closes it on exit.
type Provider struct {
	mu      sync.Mutex
	modules map[string]*module
}

// NewProvider returns a provider that loads modules on first use.
func NewProvider() *Provider { return &Provider{modules: map[string]*module{}} }

func (p *Provider) module(path string) (*module, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.modules[path]; ok {
		return m, nil
	}
	m, err := openModule(path)
	if err != nil {
		return nil, err
	}
	p.modules[path] = m
	return m, nil
}

// Close finalizes and unloads every module.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for path, m := range p.modules {
		m.close()
		delete(p.modules, path)
	}
	return nil
}

// Store returns a key store on the token rawURI names: new keys are
// generated there, labelled after the URI's object (default
// "certmesh-ca"). The token is reached now, so that a wrong URI or PIN
// fails at start rather than at the first renewal.
func (p *Provider) Store(rawURI string) (*Store, error) {
	u, err := ParseURI(rawURI)
	if err != nil {
		return nil, err
	}
	if u.PinValue != "" {
		return nil, fmt.Errorf("%w: pin-value is not kept in the state directory, so a restart could not log in: use pin-source=file:<path>", ErrBadURI)
	}
	m, err := p.module(u.ModulePath)
	if err != nil {
		return nil, err
	}
	s := &Store{m: m, uri: u}
	if err := (&Key{m: m, uri: u}).checkToken(); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenKey returns the key rawURI names (as recorded by Key.KeyURI).
func (p *Provider) OpenKey(rawURI string) (crypto.Signer, error) {
	u, err := ParseURI(rawURI)
	if err != nil {
		return nil, err
	}
	if u.Object == "" && len(u.ID) == 0 {
		return nil, fmt.Errorf("%w: %s names no key (want object= or id=)", ErrBadURI, u)
	}
	m, err := p.module(u.ModulePath)
	if err != nil {
		return nil, err
	}
	k := &Key{m: m, uri: u}
	if err := k.loadPublic(); err != nil {
		return nil, err
	}
	return k, nil
}

// Store generates CA keys on one token.
type Store struct {
	m   *module
	uri URI
}

var _ ca.KeyStore = (*Store)(nil)

// GenerateKey makes a new key pair of type kt on the token, with a random
// CKA_ID (from rnd) and the label <object>-<id>. The private key is
// sensitive and not extractable: it never leaves the token.
func (s *Store) GenerateKey(kt ca.KeyType, rnd io.Reader) (ca.ExternalKey, error) {
	if kt == "" {
		kt = ca.KeyECP256
	}
	curve, ok := curves[kt]
	if !ok {
		return nil, fmt.Errorf("pkcs11: generate %s: only ec-p256 and ec-p384 keys are made on a token: %w", kt, ca.ErrUnknownKeyType)
	}
	raw := make([]byte, 8)
	if _, err := io.ReadFull(rnd, raw); err != nil {
		return nil, fmt.Errorf("pkcs11: key id: %w", err)
	}
	id := hex.EncodeToString(raw)
	prefix := s.uri.Object
	if prefix == "" {
		prefix = "certmesh-ca"
	}
	u := s.uri
	u.Object, u.ID = prefix+"-"+id, []byte(id)
	k := &Key{m: s.m, uri: u}
	if err := k.generate(curve); err != nil {
		return nil, err
	}
	return k, nil
}
