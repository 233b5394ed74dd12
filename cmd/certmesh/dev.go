package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// AgentSocketName is the agent socket inside the state directory in dev mode.
const AgentSocketName = "agent.sock"

// runDev runs the CA server and a node agent in one process: the whole
// mesh-identity job on one machine.
func runDev(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var sf serverFlags
	var ef edgeFlags
	sf.register(fs)
	ef.register(fs)
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
	edgeMgr, err := newEdge(&ef, sf.dir, log, &cfg)
	if err != nil {
		return err
	}
	addRegistrationsStatus(&cfg, sf.regs)
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	nodeID, err := spiffeid.FromPath(cfg.TrustDomain, "/certmesh/node/dev")
	if err != nil {
		return err
	}
	token, _, err := srv.Tokens.Create(nodeID, time.Minute)
	if err != nil {
		return err
	}
	var workloads []spiffeid.ID
	var attestor identity.Attestor = identity.Chain(nil)
	if sf.regs != nil {
		workloads = workloadIDs(sf.regs.Current())
		attestor = &identity.PeerAttestor{Registrations: sf.regs, Node: func(context.Context) (spiffeid.ID, error) { return nodeID, nil }}
		registerRegistrationsMetrics(reg, sf.regs)
	}
	agentCfg := sds.Config{
		TrustDomain: cfg.TrustDomain, ServerAddr: srv.Addr(), TrustBundle: srv.CA.Roots(),
		Credential: sds.NewJoinToken(token), Workloads: workloads, SVIDTTL: sf.svidTTL,
		Logger: log, Registerer: reg,
	}
	if sf.regs != nil {
		// Entries scoped to other nodes are not this machine's: the agent
		// places them as a node agent does, by the ID it joined as.
		agentCfg.WorkloadOn = identity.Placement(sf.regs)
	}
	if edgeMgr != nil {
		agentCfg.Edge = edgeSource{edgeMgr}
	}
	agent, err := sds.New(agentCfg)
	if err != nil {
		_ = srv.Close()
		return err
	}
	socket, err := filepath.Abs(filepath.Join(sf.dir, AgentSocketName))
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return agent.Run(ctx) })
	if sf.regs != nil {
		g.Go(func() error {
			return followRegistrations(ctx, sf.regs, log, func(r *identity.Registrations) {
				agent.SetWorkloads(workloadIDs(r))
			})
		})
	}
	if edgeMgr != nil {
		g.Go(func() error { return edgeMgr.Run(ctx) })
	}
	g.Go(func() error {
		return sds.ServeEndpoints(ctx, sds.EndpointsConfig{Socket: socket, Agent: agent, Attestor: attestor, Logger: log, Registerer: reg})
	})
	if sf.metrics != "" {
		g.Go(func() error { return serveMetrics(ctx, sf.metrics, reg, isReady(agent)) })
	}
	g.Go(func() error { return announce(ctx, out, agent, socket, srv) })
	return g.Wait()
}

func isReady(a *sds.Agent) func() bool {
	return func() bool {
		select {
		case <-a.Ready():
			return true
		default:
			return false
		}
	}
}

// announce prints what a workload needs once the agent holds its SVIDs.
func announce(ctx context.Context, out io.Writer, a *sds.Agent, socket string, srv *server.Server) error {
	select {
	case <-ctx.Done():
		return nil
	case <-a.Ready():
	}
	fmt.Fprintf(out, "certmesh dev: CA on %s, %d workload identities ready\n", srv.Addr(), a.ServedWorkloads())
	fmt.Fprintf(out, "SPIFFE_ENDPOINT_SOCKET=unix://%s\n", socket)
	return nil
}

// newEdge builds the edge manager when the flags ask for edge certificates,
// and adds its status to the server's.
func newEdge(ef *edgeFlags, dir string, log *slog.Logger, cfg *server.Config) (*edge.Manager, error) {
	edgeCfg, ok, err := ef.config(dir, log)
	if err != nil || !ok {
		return nil, err
	}
	edgeCfg.OrderMetrics = edge.NewOrderMetrics(cfg.Registerer)
	m, err := edge.New(edgeCfg)
	if err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(edge.NewCollector(m.Status)); err != nil {
			return nil, fmt.Errorf("edge metrics: %w", err)
		}
	}
	addStatus(cfg, func() map[string]any { return map[string]any{"edge": m.Status()} })
	return m, nil
}
