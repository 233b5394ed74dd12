package main

import (
	"errors"

	"github.com/go-acme/lego/v4/challenge"

	"github.com/certmesh/certmesh/edge"
)

// dnsProviders offers the built-in DNS-01 providers (challtestsrv, for
// local runs and tests) and then lego's by name.
func dnsProviders() edge.DNSProviderFactory {
	return chainedDNS{edge.BuiltinDNSProviders{}, edge.LegoDNSProviders{ByName: legoDNSByName}}
}

type chainedDNS []edge.DNSProviderFactory

func (c chainedDNS) NewDNSProvider(name string, creds map[string]string) (challenge.Provider, error) {
	var last error
	for _, f := range c {
		p, err := f.NewDNSProvider(name, creds)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, edge.ErrUnknownDNSProvider) {
			return nil, err
		}
		last = err
	}
	return nil, last
}
