package sds

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
)

// watchBundles follows the CA's X.509 and JWT bundle streams, reconnecting
// with backoff, and pushes every change to the agent's watchers.
func (a *Agent) watchBundles(ctx context.Context) {
	// Both bundle streams reset the backoff from their own goroutines.
	var attempt atomic.Int64
	for ctx.Err() == nil {
		err := a.streamBundles(ctx, func() { attempt.Store(0) })
		if ctx.Err() != nil {
			return
		}
		a.metrics.caFailures.Inc()
		a.cfg.Logger.Warn("bundle stream from CA broke; reconnecting", attrError, fmt.Sprint(err))
		if !a.sleepUntil(ctx, a.cfg.Clock.Now().Add(Backoff(int(attempt.Load()), a.cfg.Jitter()))) {
			return
		}
		attempt.Add(1)
	}
}

// streamBundles runs both streams until one fails; onData resets backoff.
func (a *Agent) streamBundles(ctx context.Context, onData func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := workloadpb.NewSpiffeWorkloadAPIClient(a.client.plain)
	x509s, err := client.FetchX509Bundles(ctx, &workloadpb.X509BundlesRequest{})
	if err != nil {
		return err
	}
	jwts, err := client.FetchJWTBundles(ctx, &workloadpb.JWTBundlesRequest{})
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- a.recvX509Bundles(x509s, onData) }()
	go func() { errc <- a.recvJWTBundles(jwts, onData) }()
	err = <-errc
	cancel()
	<-errc
	return err
}

var errEmptyBundle = errors.New("sds: CA sent an empty bundle")

func (a *Agent) recvX509Bundles(s workloadpb.SpiffeWorkloadAPI_FetchX509BundlesClient, onData func()) error {
	td := a.cfg.TrustDomain
	for {
		resp, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		roots, err := x509.ParseCertificates(resp.GetBundles()[td.IDString()])
		if err != nil {
			return fmt.Errorf("sds: bad X.509 bundle: %w", err)
		}
		if len(roots) == 0 {
			return errEmptyBundle
		}
		onData()
		next := x509bundle.FromX509Authorities(td, roots)
		if !next.Equal(a.bundle.Load()) {
			a.bundle.Store(next)
			a.metrics.bundleUpdates.Inc()
			a.cfg.Logger.Info("trust bundle updated", "roots", len(roots))
			a.notify()
		}
	}
}

func (a *Agent) recvJWTBundles(s workloadpb.SpiffeWorkloadAPI_FetchJWTBundlesClient, onData func()) error {
	td := a.cfg.TrustDomain
	for {
		resp, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		next, err := jwtbundle.Parse(td, resp.GetBundles()[td.IDString()])
		if err != nil {
			return fmt.Errorf("sds: bad JWT bundle: %w", err)
		}
		onData()
		if !next.Equal(a.jwtBundle.Load()) {
			a.jwtBundle.Store(next)
			a.notify()
		}
	}
}
