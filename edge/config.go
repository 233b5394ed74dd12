package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"k8s.io/utils/clock"
)

// Let's Encrypt directories, offered as the named presets "production" and "staging".
const (
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// KeyType is the key algorithm of issued certificates.
type KeyType string

// Supported certificate key types; ECDSA P-256 is the default because it is small and
// every current client accepts it.
const (
	KeyEC256   KeyType = "ec-p256"
	KeyRSA2048 KeyType = "rsa-2048"
)

// ChallengeType names an ACME challenge a solver answers.
type ChallengeType string

// The challenges edge can solve.
const (
	HTTP01    ChallengeType = "http-01"
	TLSALPN01 ChallengeType = "tls-alpn-01"
	DNS01     ChallengeType = "dns-01"
)

// Config configures a Manager. New validates it and fills defaults.
type Config struct {
	// Dir holds edge state: accounts/<issuer>/, locks/ and one folder per certificate.
	// It may be empty when Store is set; order locks are then per process only (in
	// Kubernetes, leader election keeps a second replica from ordering).
	Dir string
	// Store keeps certificates and accounts (default FileStore{Dir}).
	Store Store
	// Observer, when set, hears of every stored, restored and failed certificate
	// (the Ingress controller turns them into Events).
	Observer     Observer
	Issuers      map[string]IssuerConfig
	Certificates []CertificateSpec
	// HTTP01Addr is where Run serves /.well-known/acme-challenge/ ("" = no listener;
	// HTTP01Handler can still be mounted elsewhere).
	HTTP01Addr string
	// TLSALPN01Addr is where Run answers acme-tls/1 handshakes ("" = no listener).
	TLSALPN01Addr string
	// DNSProviders builds DNS-01 providers by name; default: BuiltinDNSProviders.
	DNSProviders DNSProviderFactory
	// HTTPClient, when set, talks to every ACME directory (tests use it to trust
	// Pebble); otherwise each issuer gets a client trusting its CABundle or the system.
	HTTPClient *http.Client
	// Backoff paces retries after failed orders.
	Backoff Backoff
	// ARIPoll is how often the CA's renewal information is re-read (default 6h, as
	// RFC 9773 suggests; a longer Retry-After from the CA wins).
	ARIPoll time.Duration
	// MaxConcurrentOrders bounds simultaneous orders (default 16) so a large batch does
	// not flood the CA.
	MaxConcurrentOrders int
	// OrderMetrics, if set, records order durations and failures by type.
	OrderMetrics *OrderMetrics
	Clock        clock.Clock
	// Rand is used for keys and for the point chosen inside an ARI window.
	Rand   io.Reader
	Logger *slog.Logger
}

// IssuerConfig describes one ACME CA and the account used with it.
type IssuerConfig struct {
	DirectoryURL string
	Email        string
	EAB          *EAB
	// CABundle is PEM; when set, only these roots are trusted for the directory's TLS.
	CABundle       []byte
	PreferredChain string
	KeyType        KeyType
	Profile        string
}

// EAB is an External Account Binding (RFC 8555 §7.3.4), required by some CAs.
type EAB struct {
	KID string
	// HMAC is the base64url MAC key as the CA hands it out.
	HMAC string
}

// CertificateSpec is one certificate to keep valid.
type CertificateSpec struct {
	// Name is the store folder and the SDS resource name.
	Name     string
	DNSNames []string
	Issuer   string
	Solver   SolverConfig
}

// SolverConfig says how the challenges of a certificate are answered.
type SolverConfig struct {
	Type ChallengeType
	DNS  DNSSolverConfig
	// HTTP01Router, for http-01, is told before and after each challenge so that the
	// ingress can route /.well-known/acme-challenge/<token> of the domain to the
	// responder (the Kubernetes controller creates a temporary Ingress rule). Keep it
	// a comparable value: Ensure compares specs to see whether anything changed.
	HTTP01Router HTTP01Router
}

// HTTP01Router makes the path of one HTTP-01 challenge reach the responder.
type HTTP01Router interface {
	// Route is called after the responder knows keyAuth and before the CA is asked
	// to validate; it may wait until the route works.
	Route(ctx context.Context, domain, token, keyAuth string) error
	Unroute(ctx context.Context, domain, token string) error
}

// Observer hears what happens to certificates. Calls come from the Manager's loops:
// keep them quick and never call back into the Manager's Ensure/Remove from them.
type Observer interface {
	// CertificateStored reports a certificate written to the store: newly issued, or
	// restored (an existing one written back after its stored copy disappeared).
	CertificateStored(name string, sv Served, restored bool)
	// CertificateFailed reports a failed order and when it is retried.
	CertificateFailed(name string, err error, retryAt time.Time)
}

// DNSSolverConfig configures DNS-01.
type DNSSolverConfig struct {
	// Provider is a name DNSProviders knows (any of lego's with the lego factory).
	Provider string
	// Credentials are the provider's settings, keyed by lego's variable names.
	Credentials map[string]string
	// Resolvers, when set, are the only servers asked whether the TXT record is visible
	// (host:port). lego v4 keeps them in a process-wide variable: the last set wins.
	Resolvers []string
}

// Backoff is the retry policy after a failed order: Min doubled per consecutive
// failure, capped at Max.
type Backoff struct {
	Min time.Duration
	Max time.Duration
}

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// withDefaults validates cfg and returns it with every default filled in.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Dir == "" && cfg.Store == nil {
		return cfg, fmt.Errorf("%w: Dir or Store is required", ErrInvalidConfig)
	}
	if cfg.Store == nil {
		cfg.Store = FileStore{Dir: cfg.Dir}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = cryptoRand
	}
	if cfg.DNSProviders == nil {
		cfg.DNSProviders = BuiltinDNSProviders{}
	}
	cfg.Backoff = cfg.Backoff.withDefaults()
	if cfg.ARIPoll <= 0 {
		cfg.ARIPoll = 6 * time.Hour
	}
	if cfg.MaxConcurrentOrders <= 0 {
		cfg.MaxConcurrentOrders = 16
	}
	issuers := make(map[string]IssuerConfig, len(cfg.Issuers))
	for name, iss := range cfg.Issuers {
		filled, err := iss.withDefaults(name)
		if err != nil {
			return cfg, err
		}
		issuers[name] = filled
	}
	cfg.Issuers = issuers
	return cfg, cfg.validateCertificates()
}

func (iss IssuerConfig) withDefaults(name string) (IssuerConfig, error) {
	if iss.DirectoryURL == "" {
		return iss, fmt.Errorf("%w: issuer %q: directory URL is required", ErrInvalidConfig, name)
	}
	if iss.KeyType == "" {
		iss.KeyType = KeyEC256
	}
	if _, err := iss.KeyType.lego(); err != nil {
		return iss, fmt.Errorf("issuer %q: %w", name, err)
	}
	if iss.EAB != nil && (iss.EAB.KID == "" || iss.EAB.HMAC == "") {
		return iss, fmt.Errorf("%w: issuer %q: EAB needs both kid and hmac", ErrInvalidConfig, name)
	}
	return iss, nil
}

func (cfg Config) validateCertificates() error {
	seen := make(map[string]bool, len(cfg.Certificates))
	for _, spec := range cfg.Certificates {
		if !namePattern.MatchString(spec.Name) {
			return fmt.Errorf("%w: certificate name %q must be a lower-case DNS-like label", ErrInvalidConfig, spec.Name)
		}
		if seen[spec.Name] {
			return fmt.Errorf("%w: certificate name %q used twice", ErrInvalidConfig, spec.Name)
		}
		seen[spec.Name] = true
		if err := cfg.validateSpec(spec); err != nil {
			return err
		}
	}
	return nil
}

func (cfg Config) validateSpec(spec CertificateSpec) error {
	if _, ok := cfg.Issuers[spec.Issuer]; !ok {
		return fmt.Errorf("%w: certificate %q names unknown issuer %q", ErrInvalidConfig, spec.Name, spec.Issuer)
	}
	return validateSolver(spec)
}

// validateSolver checks the parts of a spec that do not depend on the issuer set.
func validateSolver(spec CertificateSpec) error {
	if len(spec.DNSNames) == 0 {
		return fmt.Errorf("%w: certificate %q has no DNS names", ErrInvalidConfig, spec.Name)
	}
	for _, n := range spec.DNSNames {
		if strings.HasPrefix(n, "*.") && spec.Solver.Type != DNS01 {
			return fmt.Errorf("%w: certificate %q: wildcard %q needs dns-01", ErrInvalidConfig, spec.Name, n)
		}
	}
	switch spec.Solver.Type {
	case HTTP01, TLSALPN01:
		return nil
	case DNS01:
		if spec.Solver.DNS.Provider == "" {
			return fmt.Errorf("%w: certificate %q: dns-01 needs a provider", ErrInvalidConfig, spec.Name)
		}
		return nil
	default:
		return fmt.Errorf("%w: certificate %q: unknown solver %q", ErrInvalidConfig, spec.Name, spec.Solver.Type)
	}
}

func (k KeyType) lego() (certcrypto.KeyType, error) {
	switch k {
	case KeyEC256:
		return certcrypto.EC256, nil
	case KeyRSA2048:
		return certcrypto.RSA2048, nil
	default:
		return "", fmt.Errorf("%w: key type %q (want ec-p256 or rsa-2048)", ErrInvalidConfig, k)
	}
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = 5 * time.Second
	}
	if b.Max <= 0 {
		b.Max = 6 * time.Hour
	}
	return b
}
