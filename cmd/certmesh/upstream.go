package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/upstream"
)

// upstreamFlags make `certmesh server` a downstream of another certmesh
// server, which signs its intermediates (README: "One root for several
// clusters").
type upstreamFlags struct {
	addr, tokenFile, bundleFile string
}

func (u *upstreamFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&u.addr, "upstream", "", "ADDR of an upstream certmesh server that signs this CA's intermediates (at first start and at every renewal); this CA then has no root of its own and --trust-domain must be <name>.<upstream trust domain>")
	fs.StringVar(&u.tokenFile, "upstream-token-file", "", "file holding the token that grants this server's identity on the upstream: a join token from `certmesh token create --id spiffe://<upstream td>/certmesh/downstream/<name>` there, or a ServiceAccount token; read only while no valid SVID is held")
	fs.StringVar(&u.bundleFile, "upstream-bundle", "", "PEM file with the upstream's roots (`certmesh ca bundle` on the upstream), to authenticate it")
}

// config is the upstream client, or nil without --upstream. Its SVID is
// kept in DIR/upstream-svid.pem.
func (u *upstreamFlags) config(dir string, log *slog.Logger) (*upstream.Client, error) {
	if u.addr == "" {
		if u.tokenFile != "" || u.bundleFile != "" {
			return nil, errors.New("--upstream-token-file and --upstream-bundle need --upstream")
		}
		return nil, nil
	}
	if u.tokenFile == "" || u.bundleFile == "" {
		return nil, errors.New("--upstream needs --upstream-token-file and --upstream-bundle")
	}
	b, err := os.ReadFile(u.bundleFile)
	if err != nil {
		return nil, fmt.Errorf("--upstream-bundle: %w", err)
	}
	roots, err := ca.ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("--upstream-bundle %s: %w", u.bundleFile, err)
	}
	if len(roots[0].URIs) != 1 {
		return nil, fmt.Errorf("--upstream-bundle %s: the first root names no trust domain (a certmesh root carries spiffe://<td>)", u.bundleFile)
	}
	td, err := spiffeid.TrustDomainFromURI(roots[0].URIs[0])
	if err != nil {
		return nil, fmt.Errorf("--upstream-bundle %s: %w", u.bundleFile, err)
	}
	return upstream.New(upstream.Config{
		Addr: u.addr, Bundle: x509bundle.FromX509Authorities(td, roots), TokenFile: u.tokenFile,
		SVIDFile: filepath.Join(dir, "upstream-svid.pem"), Logger: log,
	})
}
