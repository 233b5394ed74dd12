package edge

import (
	"context"
	"fmt"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
)

// solver installs the one challenge provider a certificate uses into a lego client.
type solver interface {
	install(client *lego.Client) error
}

type http01Solver struct {
	r      *httpResponder
	router HTTP01Router
}

func (s http01Solver) install(client *lego.Client) error {
	if s.router != nil {
		return client.Challenge.SetHTTP01Provider(routedProvider{r: s.r, router: s.router, timeout: routeTimeout})
	}
	return client.Challenge.SetHTTP01Provider(s.r)
}

// routeTimeout bounds one Route/Unroute call (lego's Present has no context); Route
// may include a self-check waiting for the ingress to pick the rule up.
const routeTimeout = 3 * time.Minute

// routedProvider answers HTTP-01 from the shared responder and has the router send the
// challenge path there first; CleanUp unroutes before forgetting the token.
type routedProvider struct {
	r       *httpResponder
	router  HTTP01Router
	timeout time.Duration
}

var _ challenge.Provider = routedProvider{}

// Present implements challenge.Provider.
func (p routedProvider) Present(domain, token, keyAuth string) error {
	if err := p.r.Present(domain, token, keyAuth); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	if err := p.router.Route(ctx, domain, token, keyAuth); err != nil {
		return fmt.Errorf("edge: route http-01 for %s: %w", domain, err)
	}
	return nil
}

// CleanUp implements challenge.Provider.
func (p routedProvider) CleanUp(domain, token, keyAuth string) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	err := p.router.Unroute(ctx, domain, token)
	_ = p.r.CleanUp(domain, token, keyAuth)
	if err != nil {
		return fmt.Errorf("edge: unroute http-01 for %s: %w", domain, err)
	}
	return nil
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
		return http01Solver{r: h, router: spec.Solver.HTTP01Router}, nil
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
