package edgeconfig

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/edge"
)

const full = `
dir: state
http01Addr: 127.0.0.1:5002
issuers:
  le:
    preset: staging
    email: ops@example.com
    keyType: rsa-2048
    profile: shortlived
  private:
    directory: https://ca.internal/acme/directory
    caBundle: ca.pem
    preferredChain: Private Root
    eab: {kid: k1, hmacFile: hmac.txt}
certificates:
  - name: web
    dnsNames: [example.com, www.example.com]
    issuer: le
    solver: {type: http-01}
  - name: wild
    dnsNames: ["*.example.com"]
    issuer: private
    solver:
      type: dns-01
      provider: cloudflare
      credentialsFile: cf.env
      env: [CF_DNS_API_TOKEN]
      resolvers: [1.1.1.1:53]
`

func fakeFiles(files map[string]string) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return nil, fs.ErrNotExist
	}
}

func TestParseFull(t *testing.T) {
	cfg, err := Parse([]byte(full), Options{
		BaseDir:  "/etc/certmesh",
		Getenv:   func(k string) string { return envMap{"CF_DNS_API_TOKEN": "from-env"}[k] },
		ReadFile: fakeFiles(map[string]string{"/etc/certmesh/ca.pem": "PEM", "/etc/certmesh/hmac.txt": "secret\n", "/etc/certmesh/cf.env": "# cf\nCF_ZONE_ID=z1\nCF_DNS_API_TOKEN=from-file\n"}),
	})
	require.NoError(t, err)
	require.Equal(t, "/etc/certmesh/state", cfg.Dir)
	require.Equal(t, edge.LetsEncryptStaging, cfg.Issuers["le"].DirectoryURL)
	require.Equal(t, edge.KeyRSA2048, cfg.Issuers["le"].KeyType)
	require.Equal(t, &edge.EAB{KID: "k1", HMAC: "secret"}, cfg.Issuers["private"].EAB)
	require.Equal(t, []byte("PEM"), cfg.Issuers["private"].CABundle)
	require.Len(t, cfg.Certificates, 2)
	dns := cfg.Certificates[1].Solver.DNS
	require.Equal(t, "cloudflare", dns.Provider)
	require.Equal(t, map[string]string{"CF_ZONE_ID": "z1", "CF_DNS_API_TOKEN": "from-env"}, dns.Credentials)
}

type envMap = map[string]string

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{name: "unknown field names its line", yaml: "dir: x\nissuers:\n  le:\n    directry: https://x\n", want: "line 4"},
		{name: "bad preset", yaml: "issuers:\n  le: {preset: prod}\n", want: "preset"},
		{name: "preset and directory", yaml: "issuers:\n  le: {preset: staging, directory: https://x}\n", want: "preset"},
		{name: "missing ca bundle", yaml: "issuers:\n  le: {directory: https://x, caBundle: nope.pem}\n", want: "caBundle"},
		{name: "env listed but unset", yaml: "certificates:\n- name: a\n  solver: {type: dns-01, provider: x, env: [NOPE]}\n", want: "NOPE"},
		{name: "provider on http-01", yaml: "certificates:\n- name: a\n  solver: {type: http-01, provider: x}\n", want: "dns-01"},
		{name: "bad credentials file", yaml: "certificates:\n- name: a\n  solver: {type: dns-01, provider: x, credentialsFile: c.env}\n", want: "KEY=VALUE"},
		{name: "not yaml", yaml: "dir: [", want: "yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), Options{ReadFile: fakeFiles(map[string]string{"c.env": "novalue"})})
			require.ErrorIs(t, err, edge.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestParsedConfigBuildsManager checks that a parsed file passes edge.New.
func TestParsedConfigBuildsManager(t *testing.T) {
	cfg, err := Parse([]byte("dir: "+t.TempDir()+"\nissuers:\n  le: {preset: production}\ncertificates:\n- {name: a, dnsNames: [a.test], issuer: le, solver: {type: http-01}}\n"), Options{})
	require.NoError(t, err)
	_, err = edge.New(cfg)
	require.NoError(t, err)
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("issuers:\n  le: {preset: staging}\n"))
	f.Add([]byte("certificates:\n- name: a\n  solver: {type: dns-01, env: [X]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse(data, Options{ReadFile: fakeFiles(nil)})
		if err != nil && !errors.Is(err, edge.ErrInvalidConfig) {
			t.Fatalf("error without ErrInvalidConfig: %v", err)
		}
	})
}
