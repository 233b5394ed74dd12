package ingress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/certmesh/certmesh/edge"
)

// Issuers are declared in one ConfigMap (IssuersConfigMap, key IssuersKey) in certmesh's
// namespace, not in a CRD. Why: a CRD is an API certmesh would have to version, convert
// and migrate forever, install before the server starts, and grant cluster-scoped RBAC
// for; issuers are few, cluster-wide and owned by whoever operates certmesh, which is
// exactly what a ConfigMap in certmesh's namespace expresses. What is given up is the
// apiserver's schema check: the file is parsed strictly (an unknown field is an error
// naming its line) and a bad file is reported as an Event on every Ingress that asks
// for an issuer, while certificates already issued keep being served.
//
// Names in both cert-manager annotations resolve against this one list: certmesh has no
// namespaced issuers, so `cert-manager.io/issuer: X` means the issuer X here.
const (
	IssuersConfigMap = "certmesh-issuers"
	IssuersKey       = "issuers.yaml"
)

// Issuer is one ACME CA with the solver its certificates use.
type Issuer struct {
	ACME   edge.IssuerConfig
	Solver edge.SolverConfig
}

// SecretReader returns the data of a Secret in certmesh's namespace.
type SecretReader func(ctx context.Context, name string) (map[string][]byte, error)

// ErrInvalidIssuers reports an issuers file that cannot work.
var ErrInvalidIssuers = errors.New("ingress: invalid issuers")

type issuerDoc struct {
	Preset         string    `yaml:"preset,omitempty"`
	Directory      string    `yaml:"directory,omitempty"`
	Email          string    `yaml:"email,omitempty"`
	CABundle       string    `yaml:"caBundle,omitempty"`
	PreferredChain string    `yaml:"preferredChain,omitempty"`
	KeyType        string    `yaml:"keyType,omitempty"`
	Profile        string    `yaml:"profile,omitempty"`
	EAB            *eabDoc   `yaml:"eab,omitempty"`
	Solver         solverDoc `yaml:"solver,omitempty"`
}

type eabDoc struct {
	KID           string    `yaml:"kid,omitempty"`
	HMACSecretRef secretRef `yaml:"hmacSecretRef,omitempty"`
}

type solverDoc struct {
	Type                 string     `yaml:"type,omitempty"`
	Provider             string     `yaml:"provider,omitempty"`
	CredentialsSecretRef *secretRef `yaml:"credentialsSecretRef,omitempty"`
	Resolvers            []string   `yaml:"resolvers,omitempty"`
}

// secretRef names a Secret in certmesh's namespace, and one key of it where one value
// is meant.
type secretRef struct {
	Name string `yaml:"name,omitempty"`
	Key  string `yaml:"key,omitempty"`
}

var presets = map[string]string{
	"production": edge.LetsEncryptProduction,
	"staging":    edge.LetsEncryptStaging,
}

// ParseIssuers reads the issuers file; credentials named by secret references are
// read with secrets. A DNS-01 solver's credentials are every key of the named Secret,
// keyed by lego's variable names (CLOUDFLARE_DNS_API_TOKEN, ...).
func ParseIssuers(ctx context.Context, data []byte, secrets SecretReader) (map[string]Issuer, error) {
	docs := map[string]issuerDoc{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&docs); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidIssuers, err)
	}
	out := make(map[string]Issuer, len(docs))
	names := make([]string, 0, len(docs))
	for name := range docs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		iss, err := docs[name].resolve(ctx, name, secrets)
		if err != nil {
			return nil, fmt.Errorf("%w: issuer %q: %w", ErrInvalidIssuers, name, err)
		}
		out[name] = iss
	}
	return out, nil
}

func (d issuerDoc) resolve(ctx context.Context, name string, secrets SecretReader) (Issuer, error) {
	dir := d.Directory
	if d.Preset != "" {
		url, ok := presets[d.Preset]
		if !ok || dir != "" {
			return Issuer{}, errors.New("preset must be staging or production, without directory")
		}
		dir = url
	}
	if dir == "" {
		return Issuer{}, errors.New("directory or preset is required")
	}
	iss := Issuer{ACME: edge.IssuerConfig{
		DirectoryURL: dir, Email: d.Email, CABundle: []byte(d.CABundle),
		PreferredChain: d.PreferredChain, KeyType: edge.KeyType(d.KeyType), Profile: d.Profile,
	}}
	if d.CABundle == "" {
		iss.ACME.CABundle = nil
	}
	if d.EAB != nil {
		hmac, err := readKey(ctx, secrets, d.EAB.HMACSecretRef)
		if err != nil {
			return Issuer{}, fmt.Errorf("eab: %w", err)
		}
		iss.ACME.EAB = &edge.EAB{KID: d.EAB.KID, HMAC: hmac}
	}
	solver, err := d.Solver.resolve(ctx, secrets)
	if err != nil {
		return Issuer{}, fmt.Errorf("solver: %w", err)
	}
	iss.Solver = solver
	return iss, nil
}

func (s solverDoc) resolve(ctx context.Context, secrets SecretReader) (edge.SolverConfig, error) {
	switch edge.ChallengeType(s.Type) {
	case edge.HTTP01, "":
		if s.Provider != "" || s.CredentialsSecretRef != nil {
			return edge.SolverConfig{}, errors.New("provider settings need type dns-01")
		}
		return edge.SolverConfig{Type: edge.HTTP01}, nil
	case edge.DNS01:
	default:
		return edge.SolverConfig{}, fmt.Errorf("type %q: want http-01 or dns-01", s.Type)
	}
	if s.Provider == "" {
		return edge.SolverConfig{}, errors.New("dns-01 needs a provider")
	}
	creds := map[string]string{}
	if ref := s.CredentialsSecretRef; ref != nil {
		data, err := secrets(ctx, ref.Name)
		if err != nil {
			return edge.SolverConfig{}, fmt.Errorf("credentials secret %q: %w", ref.Name, err)
		}
		for k, v := range data {
			creds[k] = string(v)
		}
	}
	return edge.SolverConfig{Type: edge.DNS01, DNS: edge.DNSSolverConfig{
		Provider: s.Provider, Credentials: creds, Resolvers: s.Resolvers,
	}}, nil
}

func readKey(ctx context.Context, secrets SecretReader, ref secretRef) (string, error) {
	if ref.Name == "" || ref.Key == "" {
		return "", errors.New("secret reference needs name and key")
	}
	data, err := secrets(ctx, ref.Name)
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", ref.Name, err)
	}
	v, ok := data[ref.Key]
	if !ok {
		return "", fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)
	}
	return string(bytes.TrimSpace(v)), nil
}
