package edge

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// orderLocks ensures one order per name set at a time: an in-process set (flock alone
// does not exclude two descriptors of one process reliably across platforms) plus a
// non-blocking flock on Dir/locks/<hash>.lock, so a second process or a restarted one
// sharing Dir does not order the same names again.
type orderLocks struct {
	dir  string
	mu   sync.Mutex
	held map[string]bool
}

// newOrderLocks locks in Dir/locks; with dir "" the locks are per process only.
func newOrderLocks(dir string) *orderLocks {
	if dir == "" {
		return &orderLocks{held: map[string]bool{}}
	}
	return &orderLocks{dir: filepath.Join(dir, "locks"), held: map[string]bool{}}
}

// lockKey names a set of DNS names at one issuer, independent of order and case.
func lockKey(issuer string, names []string) string {
	norm := make([]string, len(names))
	for i, n := range names {
		norm[i] = strings.ToLower(n)
	}
	slices.Sort(norm)
	sum := sha256.Sum256([]byte(issuer + "\n" + strings.Join(slices.Compact(norm), "\n")))
	return hex.EncodeToString(sum[:16])
}

// tryLock takes the lock for key without waiting; it returns ErrOrderInProgress when
// someone else holds it. The returned func releases it.
func (l *orderLocks) tryLock(key string) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[key] {
		return nil, fmt.Errorf("%w (this process)", ErrOrderInProgress)
	}
	f, err := l.lockFile(key)
	if err != nil {
		return nil, err
	}
	l.held[key] = true
	return func() {
		if f != nil {
			_ = f.Close() // closing drops the flock
		}
		l.mu.Lock()
		delete(l.held, key)
		l.mu.Unlock()
	}, nil
}

func (l *orderLocks) lockFile(key string) (*os.File, error) {
	if l.dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("edge: lock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(l.dir, key+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("edge: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, fmt.Errorf("%w (another process)", ErrOrderInProgress)
		}
		return nil, fmt.Errorf("edge: lock: %w", err)
	}
	return f, nil
}
