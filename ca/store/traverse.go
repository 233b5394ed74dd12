package store

import (
	"fmt"
	"os"
	"path/filepath"
)

// searchable is the execute (search) bit for group and others: what lets
// another uid reach a name inside a directory, without listing it.
const searchable os.FileMode = 0o011

// MakeSearchable lets other uids traverse dir (mode 0711 for a 0700
// directory) without reading it, so that a socket inside it is reachable.
// Only the search bits are added: what else dir holds stays as private as
// its own modes make it.
func MakeSearchable(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if fi.Mode().Perm()&searchable == searchable {
		return nil
	}
	if err := os.Chmod(dir, fi.Mode().Perm()|searchable); err != nil {
		return fmt.Errorf("store: make %s searchable: %w", dir, err)
	}
	return nil
}

// Unsearchable returns the first directory on the way to path that other
// uids cannot traverse ("" when there is none): a socket behind it answers
// them "permission denied" whatever its own mode.
func Unsearchable(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	var dirs []string
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		dirs = append(dirs, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, err := os.Stat(dirs[i])
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return dirs[i]
		}
	}
	return ""
}
