package edge

import (
	"os"
	"testing"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/edge/challtestsrv"
)

// envProvider stands in for a lego provider that reads its token from the environment.
type envProvider struct{ token string }

func (envProvider) Present(string, string, string) error { return nil }
func (envProvider) CleanUp(string, string, string) error { return nil }

func TestLegoDNSProviders(t *testing.T) {
	const key = "CERTMESH_TEST_DNS_TOKEN"
	t.Setenv(key, "ambient")
	byName := func(name string) (challenge.Provider, error) {
		if name != "fake" {
			return nil, os.ErrNotExist
		}
		return envProvider{token: os.Getenv(key)}, nil
	}
	f := LegoDNSProviders{ByName: byName}

	tests := []struct {
		name    string
		prov    string
		creds   map[string]string
		want    challenge.Provider
		wantErr error
	}{
		{name: "credentials from config", prov: "fake", creds: map[string]string{key: "configured"}, want: envProvider{token: "configured"}},
		{name: "unknown", prov: "nope", wantErr: ErrUnknownDNSProvider},
		{name: "builtin needs url", prov: challtestsrv.Name, wantErr: ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := f.NewDNSProvider(tc.prov, tc.creds)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, p)
		})
	}
	require.Equal(t, "ambient", os.Getenv(key), "the environment is restored")

	p, err := f.NewDNSProvider(challtestsrv.Name, map[string]string{challtestsrv.EnvURL: "http://127.0.0.1:1"})
	require.NoError(t, err)
	require.Implements(t, (*challenge.ProviderTimeout)(nil), p)
	_, err = LegoDNSProviders{}.NewDNSProvider("route53", nil)
	require.ErrorIs(t, err, ErrUnknownDNSProvider)
}
