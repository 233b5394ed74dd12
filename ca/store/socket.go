package store

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"
)

// Errors for unix socket paths that cannot be used.
var (
	ErrNotSocket  = errors.New("store: path exists and is not a unix socket")
	ErrSocketBusy = errors.New("store: another process is listening on this socket")
)

// ListenUnix listens on a unix socket at path with the given permissions.
// A stale socket left by a crash is replaced; a live one (someone answers)
// or a path that is a regular file or directory is refused, never deleted.
func ListenUnix(path string, perm os.FileMode) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode()&fs.ModeSocket == 0:
		return nil, fmt.Errorf("%w: %s (%s)", ErrNotSocket, path, fi.Mode().Type())
	case err == nil:
		if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%w: %s", ErrSocketBusy, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("store: remove stale socket %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("store: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, perm); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("store: chmod %s: %w", path, err)
	}
	return lis, nil
}
