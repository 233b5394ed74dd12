//go:build !cgo

package pkcs11

import (
	"crypto"
	"errors"
	"io"

	"github.com/certmesh/certmesh/ca"
)

// ErrNoCgo is returned by a certmesh built with CGO_ENABLED=0: loading a
// PKCS#11 module needs cgo.
var ErrNoCgo = errors.New("pkcs11: this certmesh was built without cgo and cannot load PKCS#11 modules")

// Provider is a stand-in that refuses every token.
type Provider struct{}

// NewProvider returns the stand-in.
func NewProvider() *Provider { return &Provider{} }

// Close does nothing.
func (p *Provider) Close() error { return nil }

// Store refuses.
func (p *Provider) Store(string) (*Store, error) { return nil, ErrNoCgo }

// OpenKey refuses.
func (p *Provider) OpenKey(string) (crypto.Signer, error) { return nil, ErrNoCgo }

// Store is a stand-in.
type Store struct{}

// GenerateKey refuses.
func (s *Store) GenerateKey(ca.KeyType, io.Reader) (ca.ExternalKey, error) { return nil, ErrNoCgo }
