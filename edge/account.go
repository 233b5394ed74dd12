package edge

import (
	"context"
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

	"github.com/certmesh/certmesh/ca/store"
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

// accountStore loads and saves accounts through a Store.
type accountStore struct{ store Store }

// load returns the account of issuer, creating and saving its key on first use. The
// registration is nil when none was recorded for this directory.
func (s accountStore) load(ctx context.Context, issuer string, iss IssuerConfig, random io.Reader) (*account, error) {
	data, err := s.store.LoadAccount(ctx, issuer)
	if errors.Is(err, fs.ErrNotExist) {
		return s.create(ctx, issuer, iss, random)
	}
	if err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	key, err := certcrypto.ParsePEMPrivateKey(data.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	acct := &account{email: iss.Email, key: key}
	if len(data.Record) == 0 {
		return acct, nil
	}
	var rec accountRecord
	if err := json.Unmarshal(data.Record, &rec); err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	if rec.Directory == iss.DirectoryURL {
		acct.reg = rec.Registration
	}
	return acct, nil
}

func (s accountStore) create(ctx context.Context, issuer string, iss IssuerConfig, random io.Reader) (*account, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), random)
	if err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	if err := s.store.SaveAccount(ctx, issuer, AccountData{KeyPEM: certcrypto.PEMEncode(key)}); err != nil {
		return nil, fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	return &account{email: iss.Email, key: key}, nil
}

// save records the registration of issuer.
func (s accountStore) save(ctx context.Context, issuer string, acct *account, directory string) error {
	rec, err := json.MarshalIndent(accountRecord{Directory: directory, Registration: acct.reg}, "", "  ")
	if err != nil {
		return fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	data := AccountData{KeyPEM: certcrypto.PEMEncode(acct.key), Record: rec}
	if err := s.store.SaveAccount(ctx, issuer, data); err != nil {
		return fmt.Errorf("edge: account %s: %w", issuer, err)
	}
	return nil
}

// LoadAccount implements Store: Dir/accounts/<issuer>/account.key and account.json.
func (f FileStore) LoadAccount(_ context.Context, issuer string) (AccountData, error) {
	keyPEM, err := os.ReadFile(f.accountPath(issuer, "account.key"))
	if err != nil {
		return AccountData{}, err
	}
	rec, err := os.ReadFile(f.accountPath(issuer, "account.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return AccountData{}, err
	}
	return AccountData{KeyPEM: keyPEM, Record: rec}, nil
}

// SaveAccount implements Store.
func (f FileStore) SaveAccount(_ context.Context, issuer string, acct AccountData) error {
	dir := filepath.Dir(f.accountPath(issuer, "x"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := []store.Entry{{Name: "account.key", Data: acct.KeyPEM, Perm: 0o600}}
	if acct.Record != nil {
		files = append(files, store.Entry{Name: "account.json", Data: acct.Record, Perm: 0o600})
	}
	return store.WriteFiles(dir, files...)
}

func (f FileStore) accountPath(issuer, file string) string {
	return filepath.Join(f.Dir, "accounts", issuer, file)
}
