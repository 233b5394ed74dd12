package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/ca/wire"
)

// defaultDir is the state directory when neither --dir nor CERTMESH_DIR says.
const defaultDir = "/var/lib/certmesh"

func stateDirDefault() string {
	if d := os.Getenv("CERTMESH_DIR"); d != "" {
		return d
	}
	return defaultDir
}

// logFlags are shared by every long-running command.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", l.level, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", l.format)
}

// serverFlags are the CA server's flags, shared by `server` and `dev`.
type serverFlags struct {
	dir           string
	trustDomain   string
	registrations string
	listen        string
	keyType       string
	svidTTL       time.Duration
	maxTTL        time.Duration
	overlap       time.Duration
	caTTL         time.Duration
	metrics       string
	dnsNames      string
	istioCompat   bool
	log           logFlags
	hsm           hsmFlags
}

func (s *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.dir, "dir", stateDirDefault(), "state directory (CA material, tokens, sockets)")
	fs.StringVar(&s.trustDomain, "trust-domain", "", "SPIFFE trust domain, e.g. example.org (required)")
	fs.StringVar(&s.registrations, "registrations", "", "registrations file (YAML) mapping workloads to SPIFFE IDs")
	fs.StringVar(&s.listen, "listen", server.DefaultListen, "address of the CA's gRPC (TLS) listener")
	fs.StringVar(&s.keyType, "key-type", "", "key type of new roots: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096 (default: ec-p256 for a new CA, the current root's type for a rotation; a renewed intermediate keeps its predecessor's)")
	fs.DurationVar(&s.svidTTL, "svid-ttl", ca.DefaultTTL, "default SVID lifetime (at least 1m)")
	fs.DurationVar(&s.maxTTL, "max-ttl", ca.DefaultMaxTTL, "longest SVID lifetime; longer requests are clamped")
	fs.DurationVar(&s.overlap, "rotation-overlap", ca.DefaultOverlap, "how long a new root is published before it signs")
	fs.DurationVar(&s.caTTL, "ca-ttl", ca.DefaultIntermediateTTL, "lifetime of the signing intermediate, renewed automatically under the same root at half life; "+
		"at least 2 x --max-ttl so no SVID is ever shortened. The default week (SPIRE: 24h for 1h SVIDs) fits the 24h --max-ttl twice over "+
		"and leaves half a week to notice a failing renewal")
	fs.StringVar(&s.metrics, "metrics", "", "address for /metrics, /healthz and /readyz (off when empty)")
	fs.StringVar(&s.dnsNames, "server-dns-names", "", "comma-separated DNS names for the CA listener's certificate, beside localhost and the loopback IPs (default with --kubernetes: certmesh.<namespace>.svc and certmesh.<namespace>.svc.<cluster domain>)")
	fs.BoolVar(&s.istioCompat, "istio-compat", false, "stand in for istiod's CA: serve as "+wire.IstioCAServiceName+" and, with --kubernetes, publish the bundle as ConfigMap "+wire.IstioRootCertConfigMap+" in every namespace")
	s.log.register(fs)
	s.hsm.register(fs)
}

// config turns the flags into a server.Config, checking each one. hup
// reloads the registrations file (SIGHUP, see reloadSignal).
func (s *serverFlags) config(log *slog.Logger, hup <-chan os.Signal) (server.Config, error) {
	if s.trustDomain == "" {
		return server.Config{}, fmt.Errorf("--trust-domain is required")
	}
	td, err := spiffeid.TrustDomainFromString(s.trustDomain)
	if err != nil {
		return server.Config{}, fmt.Errorf("--trust-domain %q: %w", s.trustDomain, err)
	}
	var kt ca.KeyType
	if s.keyType != "" {
		if kt, err = ca.ParseKeyType(s.keyType); err != nil {
			return server.Config{}, fmt.Errorf("--key-type: %w", err)
		}
	}
	if s.svidTTL < ca.MinTTL {
		return server.Config{}, fmt.Errorf("--svid-ttl %v: must be at least %v", s.svidTTL, ca.MinTTL)
	}
	if s.maxTTL < s.svidTTL {
		return server.Config{}, fmt.Errorf("--max-ttl %v: must be at least --svid-ttl %v", s.maxTTL, s.svidTTL)
	}
	if s.caTTL < 2*s.maxTTL {
		return server.Config{}, fmt.Errorf("--ca-ttl %v: must be at least twice --max-ttl (%v), so that an intermediate renewed at half life never shortens an SVID; raise --ca-ttl or lower --max-ttl", s.caTTL, 2*s.maxTTL)
	}
	return server.Config{
		Dir: s.dir, TrustDomain: td, Listen: s.listen, ServerDNSNames: s.servingDNSNames(nil),
		CA:                ca.Config{KeyType: kt, DefaultTTL: s.svidTTL, MaxTTL: s.maxTTL, RotationOverlap: s.overlap, IntermediateTTL: s.caTTL},
		RegistrationsFile: server.RegistrationsFileConfig{Path: s.registrations, Reload: hup},
		MetricsAddr:       s.metrics, Registerer: server.NewRegistry(), Logger: log,
	}, nil
}

// servingDNSNames are the extra names of the CA listener's certificate:
// --server-dns-names, else kubeDefault (the Service's names in Kubernetes
// mode), plus Istio's CA name with --istio-compat.
func (s *serverFlags) servingDNSNames(kubeDefault []string) []string {
	names := splitList(s.dnsNames)
	if len(names) == 0 {
		names = slices.Clone(kubeDefault)
	}
	if s.istioCompat {
		names = append(names, wire.IstioCAServiceName)
	}
	return names
}

// serviceDNSNames are the names of the Service in front of the server
// pods (deploy/kubernetes/service.yaml) in namespace ns.
func serviceDNSNames(ns, clusterDomain string) []string {
	return []string{"certmesh." + ns + ".svc", "certmesh." + ns + ".svc." + clusterDomain}
}

// reloadSignal delivers SIGHUP while the registrations file is followed.
// Without one, SIGHUP keeps its default action (the process ends).
func (s *serverFlags) reloadSignal() (hup <-chan os.Signal, stop func()) {
	if s.registrations == "" {
		return nil, func() {}
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	return c, func() { signal.Stop(c) }
}

// parse parses args, turning a missing required positional into a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}
