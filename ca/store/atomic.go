// Package store keeps certmesh state on disk safely: every write is atomic
// (temp file, fsync, rename, fsync of the directory) so a crash leaves either
// the old bytes or the new ones, and a directory lock keeps a second server
// off a state directory that one already owns.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces path with data. The file is created with perm
// (keys use 0600) before any byte is written, so a key is never readable by
// others even for a moment. On any error the previous content of path is left
// untouched and the temporary file is removed.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	if err := replace(path, data, perm); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Entry is one file of WriteFiles: a name inside the directory, its content and mode.
type Entry struct {
	Name string
	Data []byte
	Perm os.FileMode
}

// WriteFiles atomically replaces each entry's file inside dir, in order, as WriteFile
// does, and makes the renames durable with one fsync of dir at the end. Each file is
// replaced on its own, not the set: a crash between two renames leaves some files new
// and some old, so a reader of the set must check that they agree, and the writer puts
// the file that completes the set last.
func WriteFiles(dir string, entries ...Entry) error {
	for _, e := range entries {
		if err := replace(filepath.Join(dir, e.Name), e.Data, e.Perm); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// replace writes data to a temporary file beside path (created with perm, then
// fsynced) and renames it over path; the directory is not synced.
func replace(path string, data []byte, perm os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("store: write %s: fsync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("store: write %s: %w", path, err)
	}
	return nil
}

// syncDir makes a rename durable: without it a power loss can forget the new
// directory entry even though the file's bytes reached the disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("store: sync dir %s: %w", dir, err)
	}
	return nil
}

// File is one file written atomically. It satisfies the small Load/Save
// persistence interfaces that other packages declare (join tokens, for one).
type File struct {
	Path string
	Perm os.FileMode
}

// Load returns the file's content; a missing file is an error wrapping fs.ErrNotExist.
func (f File) Load() ([]byte, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return b, nil
}

// Save atomically replaces the file's content.
func (f File) Save(data []byte) error {
	perm := f.Perm
	if perm == 0 {
		perm = 0o600
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return WriteFile(f.Path, data, perm)
}
