package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	cak8s "github.com/certmesh/certmesh/ca/k8s"
)

func TestPluginCAFlags(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600))
	tests := []struct {
		name       string
		args       []string
		wantErr    string
		wantFormat cak8s.PluginFormat
	}{
		{name: "istio", args: []string{"--kubernetes", "--plugin-ca-secret", "cacerts", "--plugin-ca-format", "istio"}, wantFormat: cak8s.PluginIstio},
		{name: "auto by default", args: []string{"--kubernetes", "--plugin-ca-secret", "cacerts"}, wantFormat: cak8s.PluginAuto},
		{name: "unknown format", args: []string{"--kubernetes", "--plugin-ca-secret", "cacerts", "--plugin-ca-format", "pkcs12"},
			wantErr: `--plugin-ca-format: k8s: plug-in CA format "pkcs12": want auto, istio or tls`},
		{name: "needs --kubernetes", args: []string{"--plugin-ca-secret", "cacerts"}, wantErr: "--plugin-ca-secret needs --kubernetes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k kubeFlags
			fs := flag.NewFlagSet("server", flag.ContinueOnError)
			k.register(fs)
			require.NoError(t, fs.Parse(append([]string{"--kubeconfig", kubeconfig}, tt.args...)))
			kc, err := k.config()
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "cacerts", kc.PluginCA.Secret)
			require.Equal(t, tt.wantFormat, kc.PluginCA.Format)
		})
	}
}
