package edgeconfig

import (
	"fmt"
	"strings"

	"github.com/certmesh/certmesh/edge"
)

// file is the YAML document.
type file struct {
	Dir           string            `yaml:"dir"`
	HTTP01Addr    string            `yaml:"http01Addr"`
	TLSALPN01Addr string            `yaml:"tlsalpn01Addr"`
	Issuers       map[string]issuer `yaml:"issuers"`
	Certificates  []certificate     `yaml:"certificates"`
}

type issuer struct {
	Preset         string `yaml:"preset"`
	Directory      string `yaml:"directory"`
	Email          string `yaml:"email"`
	EAB            *eab   `yaml:"eab"`
	CABundle       string `yaml:"caBundle"`
	PreferredChain string `yaml:"preferredChain"`
	KeyType        string `yaml:"keyType"`
	Profile        string `yaml:"profile"`
}

type eab struct {
	KID      string `yaml:"kid"`
	HMAC     string `yaml:"hmac"`
	HMACFile string `yaml:"hmacFile"`
}

type certificate struct {
	Name     string   `yaml:"name"`
	DNSNames []string `yaml:"dnsNames"`
	Issuer   string   `yaml:"issuer"`
	Solver   solver   `yaml:"solver"`
}

type solver struct {
	Type            string   `yaml:"type"`
	Provider        string   `yaml:"provider"`
	CredentialsFile string   `yaml:"credentialsFile"`
	Env             []string `yaml:"env"`
	Resolvers       []string `yaml:"resolvers"`
}

var presets = map[string]string{
	"production": edge.LetsEncryptProduction,
	"staging":    edge.LetsEncryptStaging,
}

func (f file) toConfig(opts Options) (edge.Config, error) {
	cfg := edge.Config{
		Dir: opts.path(f.Dir), HTTP01Addr: f.HTTP01Addr, TLSALPN01Addr: f.TLSALPN01Addr,
		Issuers: map[string]edge.IssuerConfig{},
	}
	for name, iss := range f.Issuers {
		ic, err := iss.toIssuer(name, opts)
		if err != nil {
			return edge.Config{}, err
		}
		cfg.Issuers[name] = ic
	}
	for i, c := range f.Certificates {
		spec, err := c.toSpec(opts)
		if err != nil {
			return edge.Config{}, fmt.Errorf("certificates[%d]: %w", i, err)
		}
		cfg.Certificates = append(cfg.Certificates, spec)
	}
	return cfg, nil
}

func (iss issuer) toIssuer(name string, opts Options) (edge.IssuerConfig, error) {
	dir := iss.Directory
	if iss.Preset != "" {
		url, ok := presets[iss.Preset]
		if !ok || dir != "" {
			return edge.IssuerConfig{}, fmt.Errorf("%w: issuer %q: preset must be staging or production, without directory", edge.ErrInvalidConfig, name)
		}
		dir = url
	}
	ic := edge.IssuerConfig{
		DirectoryURL: dir, Email: iss.Email, PreferredChain: iss.PreferredChain,
		KeyType: edge.KeyType(iss.KeyType), Profile: iss.Profile,
	}
	if iss.CABundle != "" {
		pem, err := opts.ReadFile(opts.path(iss.CABundle))
		if err != nil {
			return ic, fmt.Errorf("%w: issuer %q: caBundle: %w", edge.ErrInvalidConfig, name, err)
		}
		ic.CABundle = pem
	}
	if iss.EAB != nil {
		e, err := iss.EAB.toEAB(opts)
		if err != nil {
			return ic, fmt.Errorf("%w: issuer %q: eab: %w", edge.ErrInvalidConfig, name, err)
		}
		ic.EAB = e
	}
	return ic, nil
}

func (e eab) toEAB(opts Options) (*edge.EAB, error) {
	hmac := e.HMAC
	if e.HMACFile != "" {
		if hmac != "" {
			return nil, fmt.Errorf("hmac and hmacFile are exclusive")
		}
		data, err := opts.ReadFile(opts.path(e.HMACFile))
		if err != nil {
			return nil, err
		}
		hmac = strings.TrimSpace(string(data))
	}
	return &edge.EAB{KID: e.KID, HMAC: hmac}, nil
}

func (c certificate) toSpec(opts Options) (edge.CertificateSpec, error) {
	spec := edge.CertificateSpec{Name: c.Name, DNSNames: c.DNSNames, Issuer: c.Issuer}
	spec.Solver.Type = edge.ChallengeType(c.Solver.Type)
	if spec.Solver.Type != edge.DNS01 {
		if c.Solver.Provider != "" || c.Solver.CredentialsFile != "" || len(c.Solver.Env) > 0 {
			return spec, fmt.Errorf("%w: %q: provider settings need type dns-01", edge.ErrInvalidConfig, c.Name)
		}
		return spec, nil
	}
	creds, err := c.Solver.credentials(opts)
	if err != nil {
		return spec, fmt.Errorf("%w: %q: %w", edge.ErrInvalidConfig, c.Name, err)
	}
	spec.Solver.DNS = edge.DNSSolverConfig{Provider: c.Solver.Provider, Credentials: creds, Resolvers: c.Solver.Resolvers}
	return spec, nil
}

// credentials merges the credentials file with the listed environment variables
// (the environment wins, so a secret can be injected over a checked-in file).
func (s solver) credentials(opts Options) (map[string]string, error) {
	creds := map[string]string{}
	if s.CredentialsFile != "" {
		data, err := opts.ReadFile(opts.path(s.CredentialsFile))
		if err != nil {
			return nil, fmt.Errorf("credentialsFile: %w", err)
		}
		if creds, err = parseEnvFile(data); err != nil {
			return nil, fmt.Errorf("credentialsFile: %w", err)
		}
	}
	for _, name := range s.Env {
		v := opts.Getenv(name)
		if v == "" {
			return nil, fmt.Errorf("environment variable %s is listed but not set", name)
		}
		creds[name] = v
	}
	return creds, nil
}
