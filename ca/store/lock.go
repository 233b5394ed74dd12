package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrLocked means another process owns the state directory.
var ErrLocked = errors.New("store: state directory is in use by another certmesh server")

// LockFileName is the lock file inside a state directory.
const LockFileName = "certmesh.lock"

// Lock is an exclusive advisory lock on a state directory. The kernel drops
// it when the process dies, so a crash never leaves a stale lock behind.
type Lock struct {
	f *os.File
}

// LockDir takes the lock of dir without waiting. If another process holds it,
// the error wraps ErrLocked and names the holder's pid when known.
func LockDir(dir string) (*Lock, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (held by pid %s)", ErrLocked, dir, string(holder))
		}
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprint(os.Getpid())), 0)
	return &Lock{f: f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
