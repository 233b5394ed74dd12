package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/certmesh/certmesh/ca/store"
)

// Files is the CA's persisted state: relative slash-separated
// path → content ("state.json", "authorities/<id>/jwt.key",
// "authorities/<id>/intermediate.key", …, and an older directory's
// top-level "jwt.key"). It lets the directory stay the
// CA's model while another store (a Kubernetes Secret, for replicas) holds
// the authoritative copy: export with ExportFiles, apply with Restore.
type Files map[string][]byte

// ErrBadFiles means a Files set names a path outside the CA's files.
var ErrBadFiles = errors.New("ca: CA files hold an unexpected path")

// ExportFiles reads the CA's files under the state lock, so they are one
// consistent set (no state naming a key that is not written yet).
func (c *CA) ExportFiles() (Files, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ReadFiles(c.cfg.Dir)
}

// ReadFiles reads the CA files in dir without a running CA.
func ReadFiles(dir string) (Files, error) {
	out := Files{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !snapshotPath(rel) {
			return nil // temp files of an atomic write, anything foreign
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ca: snapshot: %w", err)
	}
	return out, nil
}

// snapshotPath accepts exactly the files a CA directory holds.
func snapshotPath(rel string) bool {
	switch rel {
	case stateFileName, jwtKeyFile:
		return true
	}
	parts := strings.Split(rel, "/")
	if len(parts) != 3 || parts[0] != authoritiesPath || parts[1] == "" || strings.HasPrefix(parts[1], ".") {
		return false
	}
	switch parts[2] {
	case rootCertFile, rootKeyFile, rootKeyFile + keyURISuffix, jwtKeyFile:
		return true
	}
	return isIntermediateFile(parts[2])
}

// WriteFiles makes dir hold exactly s: every file written atomically
// (keys before the state that names them), authorities and intermediates
// not in s removed, and
// the legacy top-level jwt.key removed once s no longer holds it (migrated).
func WriteFiles(dir string, s Files) error {
	names := slices.Sorted(maps.Keys(s))
	for _, n := range names {
		if !snapshotPath(n) {
			return fmt.Errorf("%w: %q", ErrBadFiles, n)
		}
	}
	// state.json last: it names authorities, which must exist first.
	slices.SortStableFunc(names, func(a, b string) int { return boolCmp(a == stateFileName, b == stateFileName) })
	for _, n := range names {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("ca: write snapshot: %w", err)
		}
		perm := os.FileMode(0o644)
		if path.Ext(n) == ".key" {
			perm = 0o600
		}
		if err := store.WriteFile(p, s[n], perm); err != nil {
			return fmt.Errorf("ca: write snapshot: %w", err)
		}
	}
	if _, ok := s[jwtKeyFile]; !ok {
		if err := os.Remove(filepath.Join(dir, jwtKeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ca: write snapshot: %w", err)
		}
	}
	return removeOtherAuthorities(filepath.Join(dir, authoritiesPath), s)
}

func removeOtherAuthorities(dir string, s Files) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ca: write snapshot: %w", err)
	}
	for _, e := range entries {
		if _, ok := s[authoritiesPath+"/"+e.Name()+"/"+rootCertFile]; ok {
			if err := removeOtherIntermediates(filepath.Join(dir, e.Name()), authoritiesPath+"/"+e.Name()+"/", s); err != nil {
				return err
			}
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("ca: write snapshot: %w", err)
		}
	}
	return nil
}

// removeOtherIntermediates removes the intermediates of one authority's
// directory that s does not hold (retired under the same root).
func removeOtherIntermediates(dir, prefix string, s Files) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("ca: write snapshot: %w", err)
	}
	for _, e := range entries {
		if _, ok := s[prefix+e.Name()]; ok || !isIntermediateFile(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("ca: write snapshot: %w", err)
		}
	}
	return nil
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// Restore replaces the CA's state with s — another replica's, read from the
// shared store — and installs it: signer, bundle and JWT key switch at once
// and BundleChanged fires. A snapshot that does not load leaves the CA as it
// was in memory (the directory then holds s; the next Restore repairs it).
func (c *CA) Restore(s Files) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := WriteFiles(c.cfg.Dir, s); err != nil {
		return err
	}
	state, err := c.loadState()
	if err != nil {
		return fmt.Errorf("ca: restore: %w", err)
	}
	old := c.authorities
	c.authorities = map[string]*Authority{}
	if err := c.loadAuthorities(state); err != nil {
		c.authorities = old
		return fmt.Errorf("ca: restore: %w", err)
	}
	c.cfg.Logger.Info("CA state restored", "authorities", len(state.Authorities), "phase", state.CurrentPhase())
	return nil
}
