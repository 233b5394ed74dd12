package main

import (
	"flag"
	"fmt"

	"github.com/certmesh/certmesh/ca"
	"github.com/certmesh/certmesh/ca/pkcs11"
)

// hsmFlags put the CA's keys on a PKCS#11 token: `ca init`, `ca rotate`,
// `server` and `dev` share them.
type hsmFlags struct {
	rootKeyURI, intermediateKeyURI string
}

const keyURIHelp = " on a PKCS#11 token (HSM): an RFC 7512 URI such as " +
	"'pkcs11:token=ca;object=certmesh-%s?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/certmesh/pin'; " +
	"keys are generated there (labelled <object>-<id>), renewals and rotations make their new keys there too, " +
	"and the state directory records the key's URI (never the key, never the PIN). Pass it on every start"

func (h *hsmFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.rootKeyURI, "root-key-uri", "", "keep new root keys"+fmt.Sprintf(keyURIHelp, "root"))
	fs.StringVar(&h.intermediateKeyURI, "intermediate-key-uri", "", "keep new intermediate keys"+fmt.Sprintf(keyURIHelp, "intermediate"))
}

// apply reaches the tokens named (a wrong URI or PIN fails here, at start)
// and sets cfg's key stores, and in every case the opener of keys the state
// directory names by URI. closeKeys unloads the modules.
func (h *hsmFlags) apply(cfg *ca.Config) (closeKeys func(), err error) {
	p := pkcs11.NewProvider()
	closeKeys = func() { _ = p.Close() }
	cfg.OpenKey = p.OpenKey
	if h.rootKeyURI != "" {
		s, err := p.Store(h.rootKeyURI)
		if err != nil {
			closeKeys()
			return nil, fmt.Errorf("--root-key-uri: %w", err)
		}
		cfg.RootKeys = s
	}
	if h.intermediateKeyURI != "" {
		s, err := p.Store(h.intermediateKeyURI)
		if err != nil {
			closeKeys()
			return nil, fmt.Errorf("--intermediate-key-uri: %w", err)
		}
		cfg.IntermediateKeys = s
	}
	return closeKeys, nil
}
