// Package challtestsrv is a lego DNS-01 provider that publishes TXT records through the
// management API of pebble-challtestsrv, the DNS server Pebble's VA asks in tests.
// lego's httpreq provider speaks a different JSON, hence this small one.
package challtestsrv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
)

// Name is the provider name under which edge's DNS provider factories offer it.
const Name = "challtestsrv"

// EnvURL is the credential key holding the management API base URL.
const EnvURL = "CHALLTESTSRV_URL"

// ErrNoURL reports a configuration without a management URL.
var ErrNoURL = errors.New("challtestsrv: management URL is required")

// Config configures the provider.
type Config struct {
	// URL is the management API, e.g. http://127.0.0.1:8055.
	URL        string
	HTTPClient *http.Client
	// PropagationTimeout and PollingInterval tell lego how long to wait for the record;
	// challtestsrv answers at once, so both are short by default.
	PropagationTimeout time.Duration
	PollingInterval    time.Duration
}

// Provider implements challenge.Provider and challenge.ProviderTimeout.
type Provider struct{ cfg Config }

var (
	_ challenge.Provider        = (*Provider)(nil)
	_ challenge.ProviderTimeout = (*Provider)(nil)
)

// NewDNSProviderConfig builds a provider from explicit configuration, as lego's own
// providers do.
func NewDNSProviderConfig(cfg Config) (*Provider, error) {
	if cfg.URL == "" {
		return nil, ErrNoURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.PropagationTimeout <= 0 {
		cfg.PropagationTimeout = 10 * time.Second
	}
	if cfg.PollingInterval <= 0 {
		cfg.PollingInterval = 10 * time.Millisecond
	}
	return &Provider{cfg: cfg}, nil
}

// Present publishes the challenge TXT record.
func (p *Provider) Present(domain, _, keyAuth string) error {
	info := dns01.GetChallengeInfo(domain, keyAuth)
	return p.post("/set-txt", map[string]string{"host": info.EffectiveFQDN, "value": info.Value})
}

// CleanUp removes the challenge TXT record.
func (p *Provider) CleanUp(domain, _, keyAuth string) error {
	info := dns01.GetChallengeInfo(domain, keyAuth)
	return p.post("/clear-txt", map[string]string{"host": info.EffectiveFQDN})
}

// Timeout tells lego how long to wait for propagation and how often to look.
func (p *Provider) Timeout() (time.Duration, time.Duration) {
	return p.cfg.PropagationTimeout, p.cfg.PollingInterval
}

func (p *Provider) post(path string, body map[string]string) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("challtestsrv: %w", err)
	}
	resp, err := p.cfg.HTTPClient.Post(p.cfg.URL+path, "application/json", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("challtestsrv: %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("challtestsrv: %s: status %s", path, resp.Status)
	}
	return nil
}
