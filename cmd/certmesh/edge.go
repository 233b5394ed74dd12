package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	legolog "github.com/go-acme/lego/v4/log"

	"github.com/certmesh/certmesh/edge"
	"github.com/certmesh/certmesh/edge/edgeconfig"
)

// edgeFlags are the edge (public ACME certificates) flags of `dev` and `server`.
type edgeFlags struct {
	configFile string
	directory  string
	email      string
	caBundle   string
	domains    string
	http01Addr string
	solver     string
	profile    string
}

func (e *edgeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.configFile, "edge-config", "", "edge config file (YAML): issuers, certificates, DNS-01 providers, EAB")
	fs.StringVar(&e.directory, "acme-directory", "", "ACME directory URL, or `staging` / `production` for Let's Encrypt")
	fs.StringVar(&e.email, "acme-email", "", "contact email of the ACME account")
	fs.StringVar(&e.caBundle, "acme-ca-bundle", "", "PEM roots to trust for the ACME directory's TLS (default: the system's)")
	fs.StringVar(&e.domains, "edge-domain", "", "comma-separated host names; each gets a certificate named after it")
	fs.StringVar(&e.http01Addr, "http01-addr", "127.0.0.1:5002", "where the built-in HTTP-01 responder listens")
	fs.StringVar(&e.solver, "acme-solver", "http-01", "challenge for --edge-domain certificates: http-01 or tls-alpn-01")
	fs.StringVar(&e.profile, "acme-profile", "", "certificate profile to request, where the ACME CA offers profiles")
}

// config builds the edge configuration, or nil when nothing asks for edge
// certificates (make run without any ACME server). The server keeps them in
// its state directory's edge/.
func (e *edgeFlags) config(log *slog.Logger) (*edge.Config, error) {
	var cfg edge.Config
	if e.configFile != "" {
		var err error
		cfg, err = edgeconfig.Load(e.configFile, edgeconfig.Options{Getenv: os.Getenv})
		if err != nil {
			return nil, err
		}
	}
	if e.domains != "" {
		if err := e.addFlagCertificates(&cfg); err != nil {
			return nil, err
		}
	} else if e.directory != "" && e.configFile == "" {
		return nil, errors.New("--acme-directory needs --edge-domain (or an --edge-config)")
	}
	if len(cfg.Certificates) == 0 {
		return nil, nil
	}
	if cfg.HTTP01Addr == "" {
		cfg.HTTP01Addr = e.http01Addr
	}
	cfg.DNSProviders = dnsProviders()
	legolog.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	return &cfg, nil
}

const flagIssuer = "default"

func (e *edgeFlags) addFlagCertificates(cfg *edge.Config) error {
	dir := e.directory
	switch dir {
	case "":
		return errors.New("--edge-domain needs --acme-directory")
	case "staging":
		dir = edge.LetsEncryptStaging
	case "production":
		dir = edge.LetsEncryptProduction
	}
	iss := edge.IssuerConfig{DirectoryURL: dir, Email: e.email, Profile: e.profile}
	if e.caBundle != "" {
		b, err := os.ReadFile(e.caBundle)
		if err != nil {
			return fmt.Errorf("--acme-ca-bundle: %w", err)
		}
		iss.CABundle = b
	}
	if cfg.Issuers == nil {
		cfg.Issuers = map[string]edge.IssuerConfig{}
	}
	cfg.Issuers[flagIssuer] = iss
	for _, d := range strings.Split(e.domains, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		cfg.Certificates = append(cfg.Certificates, edge.CertificateSpec{
			Name: d, DNSNames: []string{d}, Issuer: flagIssuer, Solver: edge.SolverConfig{Type: edge.ChallengeType(e.solver)},
		})
	}
	return nil
}
