package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-acme/lego/v4/challenge/dns01"
	"golang.org/x/sync/errgroup"
)

// Run serves the configured challenge responders and keeps every certificate valid
// until ctx ends; it returns nil then, or the first listener error. In-flight orders
// are aborted (their HTTP requests carry ctx) and waited for before Run returns.
func (m *Manager) Run(ctx context.Context) error {
	m.setResolvers()
	g, gctx := errgroup.WithContext(ctx)
	if err := m.serveHTTP01(gctx, g); err != nil {
		return err
	}
	if err := m.serveALPN(gctx, g); err != nil {
		return err
	}
	m.startLoops(gctx)
	g.Go(func() error {
		<-gctx.Done()
		return nil
	})
	err := g.Wait()
	m.stopLoops()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// startLoops runs one loop per certificate, and makes Ensure start the loops of
// certificates added later.
func (m *Manager) startLoops(ctx context.Context) {
	m.setMu.Lock()
	defer m.setMu.Unlock()
	m.running = ctx
	for _, st := range m.certs {
		m.startLocked(st)
	}
}

// stopLoops waits for every loop (their context has ended) and resets the run state.
func (m *Manager) stopLoops() {
	m.setMu.Lock()
	m.running = nil
	for _, st := range m.certs {
		if st.stop != nil {
			st.stop()
			st.stop = nil
		}
	}
	m.setMu.Unlock()
	m.loops.Wait()
}

// setResolvers points lego's process-wide DNS resolver list at the configured ones;
// doing it once here, before any order, keeps concurrent orders from racing on it.
func (m *Manager) setResolvers() {
	for _, st := range m.snapshot() {
		spec := st.spec
		if r := spec.Solver.DNS.Resolvers; spec.Solver.Type == DNS01 && len(r) > 0 {
			_ = dns01.AddRecursiveNameservers(r)(nil)
			return
		}
	}
}

// loop steps one certificate until ctx ends, sleeping on the injected clock.
func (m *Manager) loop(ctx context.Context, st *certState) {
	for ctx.Err() == nil {
		next := m.step(ctx, st)
		d := next.Sub(m.cfg.Clock.Now())
		if d <= 0 {
			continue
		}
		t := m.cfg.Clock.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-st.wake:
			t.Stop()
		case <-t.C():
		}
	}
}

func (m *Manager) serveHTTP01(ctx context.Context, g *errgroup.Group) error {
	if m.cfg.HTTP01Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", m.cfg.HTTP01Addr)
	if err != nil {
		return fmt.Errorf("edge: http-01 listener: %w", err)
	}
	srv := challengeServer(m.http01)
	serve(ctx, g, func() error { return srv.Serve(ln) }, srv.Close)
	return nil
}

func (m *Manager) serveALPN(ctx context.Context, g *errgroup.Group) error {
	if m.cfg.TLSALPN01Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", m.cfg.TLSALPN01Addr)
	if err != nil {
		return fmt.Errorf("edge: tls-alpn-01 listener: %w", err)
	}
	// The handshake is the whole answer; the server never needs to read a request.
	srv := challengeServer(http.NotFoundHandler())
	tl := tls.NewListener(ln, m.alpn.tlsConfig())
	serve(ctx, g, func() error { return srv.Serve(tl) }, srv.Close)
	return nil
}

// challengeServer serves an Internet-facing challenge port. An ACME
// validator sends one small GET, so every phase of a connection is bounded:
// a client that opens connections and stalls ties up nothing for long.
func challengeServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// serve runs a server in g and closes it when ctx ends.
func serve(ctx context.Context, g *errgroup.Group, run func() error, stop func() error) {
	g.Go(func() error {
		if err := run(); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("edge: serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		return stop()
	})
}
