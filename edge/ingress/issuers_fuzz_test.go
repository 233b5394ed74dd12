package ingress

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certmesh/certmesh/edge"
)

// fuzzSecret is the one Secret content the fuzzed files can reach (under the
// names "eab" and "dns"); every key holds the same value, so an issuer's
// EAB HMAC is known whichever key it names.
var fuzzSecret = map[string][]byte{"hmac": []byte(" s3cret\n"), "CLOUDFLARE_DNS_API_TOKEN": []byte(" s3cret\n")}

func fuzzSecrets(_ context.Context, name string) (map[string][]byte, error) {
	if name == "eab" || name == "dns" {
		return fuzzSecret, nil
	}
	return nil, errors.New("no such secret")
}

// FuzzParseIssuers feeds arbitrary issuers files (the certmesh-issuers
// ConfigMap) to ParseIssuers. It must never panic; an error is always
// ErrInvalidIssuers; every parsed issuer has a directory and a solver of a
// known type (a DNS-01 one with a provider); and a parsed file, written back
// as an issuers file, parses to the same issuers.
func FuzzParseIssuers(f *testing.F) {
	for _, s := range []string{
		"le:\n  preset: production\n  email: ops@example.org\n",
		"staging:\n  preset: staging\n  solver:\n    type: http-01\n",
		"corp:\n  directory: https://acme.corp.example/dir\n  caBundle: |\n    -----BEGIN CERTIFICATE-----\n  preferredChain: Root X1\n  keyType: ec256\n  profile: shortlived\n  eab:\n    kid: k1\n    hmacSecretRef: {name: eab, key: hmac}\n",
		"dns:\n  preset: production\n  solver:\n    type: dns-01\n    provider: cloudflare\n    credentialsSecretRef: {name: dns}\n    resolvers: [\"1.1.1.1:53\"]\n",
		"dns:\n  directory: https://x\n  solver: {type: dns-01, provider: rfc2136}\n",
		"bad:\n  preset: production\n  directory: https://x\n",
		"bad:\n  solver: {type: dns-01}\n  directory: https://x\n",
		"bad:\n  directory: https://x\n  unknown: 1\n",
		"bad:\n  directory: https://x\n  eab: {kid: k, hmacSecretRef: {name: missing, key: hmac}}\n",
		"\"<<\": {directory: x}\n", "\"\": {directory: x}\n", "\"null\": {directory: x}\n", "? !!binary AA==\n: {directory: x}\n",
		"x: {directory: \"\\u0085a\"}\n", "x: {directory: \"a\\tb \"}\n", "x: {directory: \"\\ufeffa\"}\n", "x: {directory: \"\\x00a\"}\n", "\"\\ufeff\": {directory: x}\n",
		"x: {directory: \"a\\r\\nb\"}\n", "x: {directory: \"\\u2028\"}\n", "x: {directory: x, email: \"\\x1b\"}\n",
		"", "---\n", "[]", "a: b", "x: &a {directory: https://x}\ny: *a\n",
	} {
		f.Add([]byte(s))
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseIssuers(ctx, data, fuzzSecrets)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidIssuers)
			return
		}
		for name, iss := range got {
			require.NotEmpty(t, iss.ACME.DirectoryURL, name)
			switch iss.Solver.Type {
			case edge.HTTP01:
				require.Empty(t, iss.Solver.DNS.Provider, name)
			case edge.DNS01:
				require.NotEmpty(t, iss.Solver.DNS.Provider, name)
			default:
				t.Fatalf("issuer %q: solver type %q", name, iss.Solver.Type)
			}
			if iss.ACME.EAB != nil {
				require.Equal(t, "s3cret", iss.ACME.EAB.HMAC, name)
			}
		}
		out, err := yaml.Marshal(issuersFile(got))
		require.NoError(t, err)
		again, err := ParseIssuers(ctx, out, fuzzSecrets)
		require.NoError(t, err, "written back as\n%s", out)
		require.Equal(t, got, again, "round trip through\n%s", out)
	})
}

// issuersFile writes parsed issuers back in the file's form, with secret
// references to the fuzz Secret.
func issuersFile(issuers map[string]Issuer) map[string]issuerDoc {
	out := make(map[string]issuerDoc, len(issuers))
	for name, iss := range issuers {
		d := issuerDoc{
			Directory: iss.ACME.DirectoryURL, Email: iss.ACME.Email, CABundle: string(iss.ACME.CABundle),
			PreferredChain: iss.ACME.PreferredChain, KeyType: string(iss.ACME.KeyType), Profile: iss.ACME.Profile,
			Solver: solverDoc{Type: string(iss.Solver.Type), Provider: iss.Solver.DNS.Provider, Resolvers: iss.Solver.DNS.Resolvers},
		}
		if e := iss.ACME.EAB; e != nil {
			d.EAB = &eabDoc{KID: e.KID, HMACSecretRef: secretRef{Name: "eab", Key: "hmac"}}
		}
		if len(iss.Solver.DNS.Credentials) > 0 {
			d.Solver.CredentialsSecretRef = &secretRef{Name: "dns"}
		}
		out[name] = d
	}
	return out
}
