package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// runAgent runs a node agent beside a remote CA server.
func runAgent(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	serverAddr := fs.String("server", "", "CA server address host:port (required)")
	socket := fs.String("socket", "/run/certmesh/agent.sock", "unix socket for Envoy SDS and the Workload API")
	var cf credentialFlags
	fs.StringVar(&cf.joinTokenFile, "join-token-file", "", "file holding a one-time join token from `certmesh token create` (node mode)")
	fs.StringVar(&cf.joinToken, "join-token", "", "one-time join token (node mode); visible to every local user in the process list: prefer --join-token-file")
	fs.StringVar(&cf.tokenFile, "token-file", "", "projected ServiceAccount token file, read at every use (workload mode: every caller in the pod gets the pod's identity)")
	tdName := fs.String("trust-domain", "", "SPIFFE trust domain (required)")
	bundlePath := fs.String("trust-bundle", "", "PEM roots that authenticate the CA server (`certmesh ca bundle`; required)")
	regsPath := fs.String("registrations", "", "registrations of this node's workloads")
	svidTTL := fs.Duration("svid-ttl", 0, "SVID lifetime to ask for (default: the CA's)")
	metricsAddr := fs.String("metrics", "", "address for /metrics, /healthz and /readyz (off when empty)")
	edgeSecretList := fs.String("edge-secret", "", "workload mode, ingress gateway: kubernetes.io/tls Secrets (namespace/name,…) to serve over SDS under that name")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "with --edge-secret: kubeconfig file (default: in-cluster configuration)")
	var lf logFlags
	lf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *serverAddr == "" || *tdName == "" || *bundlePath == "" {
		return errors.New("agent: --server, --trust-domain and --trust-bundle are required")
	}
	cred, workloadMode, err := agentCredential(cf)
	if err != nil {
		return err
	}
	if workloadMode && *regsPath != "" {
		return errors.New("agent: --registrations is for node mode; with --token-file the pod has one identity")
	}
	if *edgeSecretList != "" && !workloadMode {
		return errors.New("agent: --edge-secret is for a gateway pod's agent (--token-file)")
	}
	log, err := lf.logger(os.Stderr)
	if err != nil {
		return err
	}
	if cf.joinToken != "" {
		log.Warn("--join-token is visible to every local user in the process list (/proc/PID/cmdline) until the agent exits; use --join-token-file")
	}
	edgeWatcher, err := edgeSecrets(*edgeSecretList, *kubeconfig, log)
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	pemBytes, err := os.ReadFile(*bundlePath)
	if err != nil {
		return fmt.Errorf("--trust-bundle: %w", err)
	}
	roots, err := ca.ParseCertsPEM(pemBytes)
	if err != nil {
		return fmt.Errorf("--trust-bundle %s: %w", *bundlePath, err)
	}
	var workloads []spiffeid.ID
	var regs *identity.RegistrationsFile
	if *regsPath != "" {
		if regs, err = openRegistrations(*regsPath, td); err != nil {
			return err
		}
		workloads = workloadIDs(regs.Current())
	}
	reg := newRegistry()
	agentCfg := sds.Config{
		TrustDomain: td, ServerAddr: *serverAddr, TrustBundle: roots, Credential: cred,
		Workloads: workloads, SVIDTTL: *svidTTL, Logger: log, Registerer: reg,
	}
	if regs != nil {
		// The file may list every node's workloads (entries with nodes:);
		// this agent serves those of the node its join token made it.
		agentCfg.WorkloadOn = identity.Placement(regs)
	}
	var edgeNames []string
	if edgeWatcher != nil {
		agentCfg.Edge, edgeNames = edgeWatcher, edgeWatcher.Names()
	}
	agent, err := sds.New(agentCfg)
	if err != nil {
		return err
	}
	var attestor identity.Attestor = identity.Chain(nil)
	if regs != nil {
		attestor = &identity.PeerAttestor{Registrations: regs, Node: agent.NodeID}
		registerRegistrationsMetrics(reg, regs)
	}
	if workloadMode {
		attestor = podAttestor(agent, edgeNames)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return agent.Run(ctx) })
	if regs != nil {
		g.Go(func() error {
			return followRegistrations(ctx, regs, log, func(r *identity.Registrations) { agent.SetWorkloads(workloadIDs(r)) })
		})
	}
	if edgeWatcher != nil {
		g.Go(func() error { return edgeWatcher.Run(ctx) })
	}
	g.Go(func() error {
		return sds.ServeEndpoints(ctx, sds.EndpointsConfig{Socket: *socket, Agent: agent, Attestor: attestor, Logger: log, Registerer: reg})
	})
	if *metricsAddr != "" {
		g.Go(func() error { return serveMetrics(ctx, *metricsAddr, reg, isReady(agent)) })
	}
	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-agent.Ready():
			fmt.Fprintf(out, "SPIFFE_ENDPOINT_SOCKET=unix://%s\n", *socket)
		}
		return nil
	})
	return g.Wait()
}
