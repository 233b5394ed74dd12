package edge

import (
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
)

// solver installs the one challenge provider a certificate uses into a lego client.
type solver interface {
	install(client *lego.Client) error
}

type http01Solver struct{ r *httpResponder }

func (s http01Solver) install(client *lego.Client) error {
	return client.Challenge.SetHTTP01Provider(s.r)
}

type alpnSolver struct{ r *alpnResponder }

func (s alpnSolver) install(client *lego.Client) error {
	return client.Challenge.SetTLSALPN01Provider(s.r)
}

type dns01Solver struct {
	provider  challenge.Provider
	resolvers []string
}

// install sets the DNS-01 provider. With resolvers configured, propagation is checked
// on those resolvers only (the authoritative check needs port 53 of the zone's real
// servers, which a private or test setup does not offer); Run has pointed lego's
// process-wide resolver list at them.
func (s dns01Solver) install(client *lego.Client) error {
	var opts []dns01.ChallengeOption
	if len(s.resolvers) > 0 {
		opts = append(opts,
			dns01.DisableAuthoritativeNssPropagationRequirement(),
			dns01.RecursiveNSsPropagationRequirement(),
		)
	}
	return client.Challenge.SetDNS01Provider(s.provider, opts...)
}

// newSolver builds the solver of spec, sharing the built-in responders.
func newSolver(spec CertificateSpec, cfg Config, h *httpResponder, a *alpnResponder) (solver, error) {
	switch spec.Solver.Type {
	case HTTP01:
		return http01Solver{r: h}, nil
	case TLSALPN01:
		return alpnSolver{r: a}, nil
	case DNS01:
		p, err := cfg.DNSProviders.NewDNSProvider(spec.Solver.DNS.Provider, spec.Solver.DNS.Credentials)
		if err != nil {
			return nil, fmt.Errorf("edge: certificate %s: %w", spec.Name, err)
		}
		return dns01Solver{provider: p, resolvers: spec.Solver.DNS.Resolvers}, nil
	default:
		return nil, fmt.Errorf("%w: unknown solver %q", ErrInvalidConfig, spec.Solver.Type)
	}
}
