package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/certmesh/certmesh/ca/server"
)

func runServer(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	var sf serverFlags
	var ef edgeFlags
	var kf kubeFlags
	var mf meshFlags
	sf.register(fs)
	ef.register(fs)
	kf.register(fs)
	mf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := sf.log.logger(os.Stderr)
	if err != nil {
		return err
	}
	cfg, err := sf.config()
	if err != nil {
		return err
	}
	reg := newRegistry()
	cfg.Logger, cfg.Registerer = log, reg
	if err := kf.apply(&cfg, log); err != nil {
		return err
	}
	edgeMgr, err := newEdge(&ef, sf.dir, log, &cfg)
	if err != nil {
		return err
	}
	if mf.ingress && edgeMgr != nil {
		return errors.New("--ingress and --edge-domain/--edge-config both want --http01-addr: use one")
	}
	addStatus(&cfg, mf.status)
	addRegistrationsStatus(&cfg, sf.regs)
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	runners, err := mf.build(srv, cfg.Kubernetes, kf.rest, ef.http01Addr, log)
	if err != nil {
		_ = srv.Close()
		return err
	}
	for name, run := range runners.leader {
		if err := srv.Leader.Add(name, run); err != nil {
			_ = srv.Close()
			return err
		}
	}
	var ready atomic.Bool
	ready.Store(true) // the CA is loaded once New returns
	fmt.Fprintf(out, "certmesh CA for %s listening on %s (admin socket %s)\n", cfg.TrustDomain.Name(), srv.Addr(), srv.AdminSocket())
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	for _, run := range runners.every {
		g.Go(func() error { return run(ctx) })
	}
	if kf.attestor != nil {
		g.Go(func() error { return kf.attestor.Run(ctx) })
	}
	if sf.regs != nil {
		registerRegistrationsMetrics(reg, sf.regs)
		g.Go(func() error { return followRegistrations(ctx, sf.regs, log, nil) })
	}
	if edgeMgr != nil {
		g.Go(func() error { return edgeMgr.Run(ctx) })
	}
	if sf.metrics != "" {
		g.Go(func() error { return serveMetrics(ctx, sf.metrics, reg, ready.Load) })
	}
	return g.Wait()
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics, /healthz (the process is up) and /readyz
// (ready() says the component has what it needs to serve) until ctx ends.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, ready func() bool) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
