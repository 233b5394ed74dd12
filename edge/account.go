package edge

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/registration"
)

// account is an ACME account as lego wants it (registration.User). The key is created
// once per issuer and reused, so a restart never registers a new account.
type account struct {
	email string
	key   crypto.PrivateKey
	reg   *registration.Resource
}

var _ registration.User = (*account)(nil)

func (a *account) GetEmail() string                        { return a.email }
func (a *account) GetRegistration() *registration.Resource { return a.reg }
func (a *account) GetPrivateKey() crypto.PrivateKey        { return a.key }

// accountRecord is what account.json keeps: the registration is only valid for the
// directory it was made at.
type accountRecord struct {
	Directory    string                 `json:"directory"`
	Registration *registration.Resource `json:"registration"`
}

// accountStore keeps accounts under Dir/accounts/<issuer>/.
type accountStore struct{ dir string }

func (s accountStore) path(issuer, file string) string {
	return filepath.Join(s.dir, "accounts", issuer, file)
}

// load returns the account of issuer, creating and saving its key on first use. The
// registration is nil when none was recorded for this directory.
func (s accountStore) load(issuer string, iss IssuerConfig, random io.Reader) (*account, error) {
	key, err := s.loadKey(issuer, random)
	if err != nil {
		return nil, err
	}
	acct := &account{email: iss.Email, key: key}
	data, err := os.ReadFile(s.path(issuer, "account.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return acct, nil
	}
	if err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	var rec accountRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	if rec.Directory == iss.DirectoryURL {
		acct.reg = rec.Registration
	}
	return acct, nil
}

func (s accountStore) loadKey(issuer string, random io.Reader) (crypto.PrivateKey, error) {
	path := s.path(issuer, "account.key")
	data, err := os.ReadFile(path)
	if err == nil {
		key, perr := certcrypto.ParsePEMPrivateKey(data)
		if perr != nil {
			return nil, fmt.Errorf("edge: account %s: %w", issuer, perr)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), random)
	if err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	if err := writeAtomic(path, certcrypto.PEMEncode(key), 0o600); err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	return key, nil
}

// save records the registration of issuer.
func (s accountStore) save(issuer, directory string, reg *registration.Resource) error {
	data, err := json.MarshalIndent(accountRecord{Directory: directory, Registration: reg}, "", "  ")
	if err != nil {
		return fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	if err := writeAtomic(s.path(issuer, "account.json"), data, 0o600); err != nil {
		return fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	return nil
}
