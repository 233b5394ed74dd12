package edge

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/go-acme/lego/v4/challenge"

	"github.com/certmesh/certmesh/edge/challtestsrv"
)

// DNSProviderFactory builds a DNS-01 provider from its name and explicit credentials
// (keyed by lego's variable names), never from the ambient environment.
type DNSProviderFactory interface {
	NewDNSProvider(name string, credentials map[string]string) (challenge.Provider, error)
}

// BuiltinDNSProviders knows the providers compiled into edge itself: challtestsrv (for
// tests and local runs). The edge/legodns package adds every lego provider on top.
type BuiltinDNSProviders struct{}

var _ DNSProviderFactory = BuiltinDNSProviders{}

// NewDNSProvider implements DNSProviderFactory.
func (BuiltinDNSProviders) NewDNSProvider(name string, creds map[string]string) (challenge.Provider, error) {
	switch name {
	case challtestsrv.Name:
		p, err := challtestsrv.NewDNSProviderConfig(challtestsrv.Config{URL: creds[challtestsrv.EnvURL]})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		return p, nil
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownDNSProvider, name)
	}
}

// LegoDNSProviders offers every lego DNS provider by name. ByName is lego's
// dns.NewDNSChallengeProviderByName, passed in by cmd/ so that only the binary, not
// this package, links lego's ~180 providers and their SDKs.
//
// lego's providers read their settings from environment variables when built by name,
// so NewDNSProvider sets exactly the configured credentials for the duration of the
// constructor (under a process-wide lock) and restores the previous values after:
// the credentials come from the configuration, never from whatever the process
// environment happens to hold.
type LegoDNSProviders struct {
	ByName func(name string) (challenge.Provider, error)
}

var _ DNSProviderFactory = LegoDNSProviders{}

// envMu serializes the environment swap; lego reads the environment only while
// constructing a provider.
var envMu sync.Mutex

// NewDNSProvider implements DNSProviderFactory.
func (l LegoDNSProviders) NewDNSProvider(name string, creds map[string]string) (challenge.Provider, error) {
	if p, err := (BuiltinDNSProviders{}).NewDNSProvider(name, creds); !errors.Is(err, ErrUnknownDNSProvider) {
		return p, err
	}
	if l.ByName == nil {
		return nil, fmt.Errorf("%w: %q (lego providers not linked in)", ErrUnknownDNSProvider, name)
	}
	envMu.Lock()
	defer envMu.Unlock()
	restore := swapEnv(creds)
	defer restore()
	p, err := l.ByName(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrUnknownDNSProvider, name, err)
	}
	return p, nil
}

// swapEnv sets vars and returns a func putting the previous values back.
func swapEnv(vars map[string]string) func() {
	type old struct {
		v  string
		ok bool
	}
	saved := make(map[string]old, len(vars))
	for k, v := range vars {
		pv, ok := os.LookupEnv(k)
		saved[k] = old{pv, ok}
		_ = os.Setenv(k, v)
	}
	return func() {
		for k, o := range saved {
			if o.ok {
				_ = os.Setenv(k, o.v)
			} else {
				_ = os.Unsetenv(k)
			}
		}
	}
}
