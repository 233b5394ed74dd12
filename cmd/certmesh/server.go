package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/certmesh/certmesh/ca/server"
)

func runServer(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	var sf serverFlags
	var ef edgeFlags
	var kf kubeFlags
	var mf meshFlags
	var uf upstreamFlags
	uf.register(fs)
	sf.register(fs)
	ef.register(fs)
	kf.register(fs)
	mf.register(fs)
	cfg, log, stop, err := sf.parseConfig(fs, args)
	if err != nil {
		return err
	}
	defer stop()
	if cfg.Kubernetes, err = kf.config(); err != nil {
		return err
	}
	if cfg.Kubernetes != nil {
		cfg.ServerDNSNames = sf.servingDNSNames(serviceDNSNames(cfg.Kubernetes.Namespace, kf.clusterDomain))
		if sf.istioCompat && kf.noBundles {
			return errors.New("--istio-compat publishes istio-ca-root-cert: it cannot go with --no-bundle-publication")
		}
		cfg.Kubernetes.IstioRootCert = sf.istioCompat
	}
	if cfg.Upstream, err = uf.config(cfg.Dir, log); err != nil {
		return err
	}
	if cfg.Upstream != nil && cfg.Kubernetes != nil {
		return errors.New("--upstream is not supported in Kubernetes mode yet: run the downstream as a single `certmesh server`")
	}
	if cfg.Edge, err = ef.config(log); err != nil {
		return err
	}
	if mf.ingress && cfg.Edge != nil {
		return errors.New("--ingress and --edge-domain/--edge-config both want --http01-addr: use one")
	}
	if cfg.Ingress, cfg.Webhook, err = mf.config(cfg.Kubernetes != nil, ef.http01Addr); err != nil {
		return err
	}
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "certmesh CA for %s listening on %s (admin socket %s)\n", cfg.TrustDomain.Name(), srv.Addr(), srv.AdminSocket())
	return srv.Run(ctx)
}

// runDev runs the CA server and a node agent in one process: the whole
// mesh-identity job on one machine.
func runDev(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var sf serverFlags
	var ef edgeFlags
	sf.register(fs)
	ef.register(fs)
	socket := fs.String("socket", "", "the agent's socket (default DIR/agent.sock; DIR is made searchable so that every registered uid reaches it)")
	cfg, log, stop, err := sf.parseConfig(fs, args)
	if err != nil {
		return err
	}
	defer stop()
	if cfg.Edge, err = ef.config(log); err != nil {
		return err
	}
	cfg.LocalAgent = &server.LocalAgentConfig{Socket: *socket}
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return announce(ctx, out, srv) })
	return g.Wait()
}

// parseConfig parses args into the server's Config and its logger; stop
// ends the SIGHUP relay the Config's registrations file listens to.
func (sf *serverFlags) parseConfig(fs *flag.FlagSet, args []string) (_ server.Config, _ *slog.Logger, stop func(), _ error) {
	if err := parse(fs, args); err != nil {
		return server.Config{}, nil, nil, err
	}
	log, err := sf.log.logger(os.Stderr)
	if err != nil {
		return server.Config{}, nil, nil, err
	}
	hup, stop := sf.reloadSignal()
	cfg, err := sf.config(log, hup)
	if err != nil {
		stop()
		return server.Config{}, nil, nil, err
	}
	closeKeys, err := sf.hsm.apply(&cfg.CA)
	if err != nil {
		stop()
		return server.Config{}, nil, nil, err
	}
	// stop is this function's named result: the closure must not call itself.
	stopRelay := stop
	return cfg, log, func() { stopRelay(); closeKeys() }, nil
}

// announce prints what a workload needs once the agent holds its SVIDs.
func announce(ctx context.Context, out io.Writer, srv *server.Server) error {
	a := srv.LocalAgent()
	select {
	case <-ctx.Done():
		return nil
	case <-a.Ready():
	}
	fmt.Fprintf(out, "certmesh dev: CA on %s, %d workload identities ready\n", srv.Addr(), a.ServedWorkloads())
	fmt.Fprintf(out, "SPIFFE_ENDPOINT_SOCKET=unix://%s\n", a.Socket)
	return nil
}
