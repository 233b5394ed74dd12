//go:build cgo

package pkcs11

import (
	"errors"
	"fmt"
	"sync"

	"github.com/miekg/pkcs11"
)

// module is one loaded PKCS#11 library. C_Initialize and C_Finalize are
// process-wide for a library, so every key on it shares this value. A key
// that sees its token fail calls reset: the library is finalized and
// initialized again on next use, which is how a token that went away (and
// the sessions and handles that went with it) is found again.
type module struct {
	path string
	// rw: signing holds it for reading; reset and initialization for writing,
	// so that C_Finalize never runs under a call in flight.
	rw    sync.RWMutex
	ctx   *pkcs11.Ctx
	ready bool
	gen   int // bumped by every reset: sessions of older generations are gone
}

func openModule(path string) (*module, error) {
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("%w: cannot load PKCS#11 module %s", ErrUnavailable, path)
	}
	return &module{path: path, ctx: ctx}, nil
}

// use runs f with the initialized library and its generation, under the read lock.
func (m *module) use(f func(ctx *pkcs11.Ctx, gen int) error) error {
	m.rw.RLock()
	if !m.ready {
		m.rw.RUnlock()
		if err := m.initialize(); err != nil {
			return err
		}
		m.rw.RLock()
	}
	defer m.rw.RUnlock()
	if !m.ready { // reset between initialize and RLock
		return fmt.Errorf("%w: module %s was reset", ErrUnavailable, m.path)
	}
	return f(m.ctx, m.gen)
}

func (m *module) initialize() error {
	m.rw.Lock()
	defer m.rw.Unlock()
	if m.ready {
		return nil
	}
	err := m.ctx.Initialize()
	var perr pkcs11.Error
	if err != nil && !(errors.As(err, &perr) && perr == pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return fmt.Errorf("%w: initialize %s: %v", ErrUnavailable, m.path, err)
	}
	m.ready = true
	return nil
}

// reset finalizes the library if gen is still current, so that the next
// use initializes it afresh.
func (m *module) reset(gen int) {
	m.rw.Lock()
	defer m.rw.Unlock()
	if !m.ready || m.gen != gen {
		return
	}
	_ = m.ctx.Finalize() // the token may be gone: nothing to do about an error
	m.ready = false
	m.gen++
}

func (m *module) close() {
	m.rw.Lock()
	defer m.rw.Unlock()
	if m.ready {
		_ = m.ctx.Finalize()
		m.ready = false
		m.gen++
	}
	m.ctx.Destroy()
}
