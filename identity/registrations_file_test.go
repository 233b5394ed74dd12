package identity

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

const (
	regsV1 = "trustDomain: example.org\nworkloads:\n  - {spiffeID: spiffe://example.org/web, uid: 10}\n"
	regsV2 = "trustDomain: example.org\nworkloads:\n  - {spiffeID: spiffe://example.org/web, uid: 10}\n  - {spiffeID: spiffe://example.org/db, uid: 11}\n"
)

// replace writes data as editors and ConfigMap volumes do: a new file renamed
// over the old one.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(data), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestRegistrationsFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regs.yaml")
	replace(t, path, regsV1)
	f, err := OpenRegistrations(path)
	require.NoError(t, err)
	db := spiffeid.RequireFromString("spiffe://example.org/db")
	_, ok := f.ByID(db)
	require.False(t, ok)

	changed, err := f.Reload()
	require.NoError(t, err)
	require.False(t, changed, "same bytes")

	ch := f.Changed()
	replace(t, path, regsV2)
	changed, err = f.Reload()
	require.NoError(t, err)
	require.True(t, changed)
	_, ok = f.ByID(db)
	require.True(t, ok)
	select {
	case <-ch:
	default:
		t.Fatal("Changed was not closed")
	}

	// A broken file changes nothing and says where it is broken.
	replace(t, path, regsV2+"  - {spiffeID: spiffe://example.org/db, uid: 12}\n")
	changed, err = f.Reload()
	require.False(t, changed)
	var regErr *RegistrationError
	require.ErrorAs(t, err, &regErr)
	require.Equal(t, 5, regErr.Line)
	require.Equal(t, err, f.Err())
	_, ok = f.ByID(db)
	require.True(t, ok, "the previous registrations stay in force")

	// So does a missing file, and another trust domain.
	require.NoError(t, os.Remove(path))
	_, err = f.Reload()
	require.ErrorIs(t, err, os.ErrNotExist)
	replace(t, path, "trustDomain: other.org\n")
	_, err = f.Reload()
	require.ErrorIs(t, err, ErrTrustDomainChanged)
	require.Equal(t, "example.org", f.TrustDomain().Name())

	replace(t, path, regsV1)
	changed, err = f.Reload()
	require.NoError(t, err)
	require.True(t, changed)
	require.NoError(t, f.Err())
	_, ok = f.ByID(db)
	require.False(t, ok)
}

func TestOpenRegistrationsRefusesABrokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regs.yaml")
	replace(t, path, "trustDomain: example.org\nworkloads: {}\n")
	_, err := OpenRegistrations(path)
	var regErr *RegistrationError
	require.ErrorAs(t, err, &regErr)
	_, err = OpenRegistrations(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestRegistrationsFileWatch: an edit is noticed by the watch and applies to
// the next attestation; a broken edit in between does not.
func TestRegistrationsFileWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regs.yaml")
	replace(t, path, regsV1)
	f, err := OpenRegistrations(path)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Watch(ctx, 5*time.Millisecond, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })
	a := &PeerAttestor{Registrations: f}
	caller := Credential{Peer: &PeerCred{UID: 11, GID: 11}}
	_, err = a.Attest(context.Background(), caller)
	require.ErrorIs(t, err, ErrNoRegistration)

	replace(t, path, "trustDomain: example.org\nworkloads: [\n")
	require.Eventually(t, func() bool { return f.Err() != nil }, 5*time.Second, 5*time.Millisecond)
	ch := f.Changed()
	replace(t, path, regsV2)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not reload the edited file")
	}
	got, err := a.Attest(context.Background(), caller)
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/db", got.ID.String())
	require.NoError(t, f.Err())
}

// TestOpenNodeRegistrations: a file for node agents refuses an unscoped
// entry at start, and an edit that adds one keeps the version in force.
func TestOpenNodeRegistrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regs.yaml")
	const scoped = "trustDomain: example.org\nworkloads:\n  - spiffeID: spiffe://example.org/a\n    uid: 1\n    nodes: ['*']\n"
	const unscoped = "trustDomain: example.org\nworkloads:\n  - spiffeID: spiffe://example.org/a\n    uid: 1\n"
	replace(t, path, unscoped)
	_, err := OpenNodeRegistrations(path)
	require.ErrorIs(t, err, ErrUnscopedEntry)

	replace(t, path, scoped)
	f, err := OpenNodeRegistrations(path)
	require.NoError(t, err)
	replace(t, path, unscoped)
	_, err = f.Reload()
	require.ErrorIs(t, err, ErrUnscopedEntry)
	e, ok := f.ByID(spiffeid.RequireFromString("spiffe://example.org/a"))
	require.True(t, ok)
	require.True(t, e.AnyNode, "the scoped version stays in force")
}

// TestOpenRegistrationsRefusesAnEmptyFile: an empty file (an empty
// ConfigMap key) is an error naming the file, not registrations of nothing
// (it used to open as nil, and the first use crashed).
func TestOpenRegistrationsRefusesAnEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regs.yaml")
	replace(t, path, "")
	for _, open := range []func(string) (*RegistrationsFile, error){OpenRegistrations, OpenNodeRegistrations} {
		f, err := open(path)
		require.Nil(t, f)
		var regErr *RegistrationError
		require.ErrorAs(t, err, &regErr)
		require.Equal(t, path, regErr.Source)
	}
}
