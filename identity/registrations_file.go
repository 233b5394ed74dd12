package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// RegistrationsFile keeps the registrations of one file current while the
// process runs, as SPIRE's entries change without restarting anything: Watch
// re-reads the file when it changes, Reload when asked (SIGHUP). A file that
// does not parse, or that names another trust domain, changes nothing: the
// registrations in force stay, and the error (with file and line) is logged
// and kept in Err until a good version is read.
type RegistrationsFile struct {
	path string
	cur  atomic.Pointer[Registrations]

	mu      sync.Mutex // one read at a time; guards the fields below
	data    []byte     // the bytes cur was parsed from
	stamp   fileStamp
	err     error
	changed chan struct{}
	// requireNodes refuses a version with an entry that lists no nodes
	// (OpenNodeRegistrations).
	requireNodes bool
}

// fileStamp tells a changed file without reading it: an edit in place changes
// the size or mtime, a replacement (editors, ConfigMap volumes) the inode.
type fileStamp struct {
	size    int64
	modTime time.Time
	ino     uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	return fileStamp{size: fi.Size(), modTime: fi.ModTime(), ino: inode(fi)}
}

// OpenRegistrations reads the registrations file at path; it must be valid,
// as at every start.
func OpenRegistrations(path string) (*RegistrationsFile, error) {
	f := &RegistrationsFile{path: path, changed: make(chan struct{})}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// OpenNodeRegistrations is OpenRegistrations for a file that remote node
// agents use (`certmesh server` and `agent`): every entry must list its
// nodes, or "*" for any node, at start and in every edit that takes effect.
func OpenNodeRegistrations(path string) (*RegistrationsFile, error) {
	f := &RegistrationsFile{path: path, changed: make(chan struct{}), requireNodes: true}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// RegistrationsSource gives the registrations in force: a *Registrations
// is its own, a *RegistrationsFile the version it last read.
type RegistrationsSource interface {
	Current() *Registrations
}

var (
	_ RegistrationsSource = (*Registrations)(nil)
	_ RegistrationsSource = (*RegistrationsFile)(nil)
)

// Current is the registrations in force.
func (f *RegistrationsFile) Current() *Registrations { return f.cur.Load() }

// ByID looks id up in the registrations in force (a CA's registry).
func (f *RegistrationsFile) ByID(id spiffeid.ID) (Entry, bool) { return f.Current().ByID(id) }

// TrustDomain is the trust domain of every version: a reload cannot change it.
func (f *RegistrationsFile) TrustDomain() spiffeid.TrustDomain { return f.Current().TrustDomain() }

// Changed is closed when a new version comes into force.
func (f *RegistrationsFile) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Err is why the file's current content is not in force, nil when it is.
func (f *RegistrationsFile) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// RegistrationsStatus is the file's state for `certmesh status`.
type RegistrationsStatus struct {
	File    string `json:"file"`
	Entries int    `json:"entries"` // in force
	// Error is why the file's current content is not in force ("" when it is).
	Error string `json:"error,omitempty"`
}

// Status reports the file, the entries in force and the refused edit, if any.
func (f *RegistrationsFile) Status() RegistrationsStatus {
	st := RegistrationsStatus{File: f.path, Entries: f.Current().Len()}
	if err := f.Err(); err != nil {
		st.Error = err.Error()
	}
	return st
}

// ErrTrustDomainChanged refuses a reload that names another trust domain:
// every identity issued so far would be foreign to the new one, so changing
// it takes a restart.
var ErrTrustDomainChanged = errors.New("identity: registrations: trustDomain changed; restart to change it")

// Reload reads the file and puts it in force if it parses and differs from the
// version in force. changed says whether it did; err is why it did not.
func (f *RegistrationsFile) Reload() (changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloadLocked()
}

func (f *RegistrationsFile) reloadLocked() (bool, error) {
	fi, err := os.Stat(f.path)
	if err == nil {
		f.stamp = stampOf(fi)
	}
	data, rerr := os.ReadFile(f.path)
	if err = errors.Join(err, rerr); err != nil {
		f.err = fmt.Errorf("identity: read registrations: %w", err)
		return false, f.err
	}
	// An empty file equals the nil data of a file never read: compare only
	// once a version is in force, or an empty file would open as nothing.
	if f.Current() != nil && bytes.Equal(data, f.data) {
		f.err = nil
		return false, nil
	}
	r, err := ParseRegistrations(data, f.path)
	if err == nil && f.requireNodes {
		err = r.RequireNodes(f.path)
	}
	if cur := f.Current(); err == nil && cur != nil && r.TrustDomain() != cur.TrustDomain() {
		err = fmt.Errorf("%w (from %q to %q in %s)", ErrTrustDomainChanged, cur.TrustDomain().Name(), r.TrustDomain().Name(), f.path)
	}
	if err != nil {
		f.err = err
		return false, err
	}
	f.cur.Store(r)
	f.data, f.err = data, nil
	close(f.changed)
	f.changed = make(chan struct{})
	return true, nil
}

// Watch checks the file every interval until ctx ends and reloads it when its
// size, mtime or inode changed. Each outcome is logged once: a new version in
// force, or a new error (repeated checks of the same broken file stay quiet).
func (f *RegistrationsFile) Watch(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		fi, err := os.Stat(f.path)
		if err == nil && stampOf(fi) == f.stamp && f.err == nil {
			f.mu.Unlock()
			continue
		}
		before := f.err
		changed, err := f.reloadLocked()
		f.mu.Unlock()
		f.logOutcome(log, changed, err, before)
	}
}

// LogReload reloads now (SIGHUP) and logs the outcome.
func (f *RegistrationsFile) LogReload(log *slog.Logger) {
	before := f.Err()
	changed, err := f.Reload()
	f.logOutcome(log, changed, err, before)
	if err == nil && !changed {
		log.Info("registrations unchanged", "file", f.path)
	}
}

func (f *RegistrationsFile) logOutcome(log *slog.Logger, changed bool, err, before error) {
	switch {
	case changed:
		log.Info("registrations reloaded", "file", f.path, "entries", f.Current().Len())
	case err != nil && (before == nil || before.Error() != err.Error()):
		log.Error("registrations not reloaded; the previous ones stay in force", "error", err)
	}
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino) //nolint:unconvert // uint32 on some platforms
	}
	return 0
}
