package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/certmesh/certmesh/sds"
)

func TestAgentCredential(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	good := write("good", "cmjt.abc\n")
	empty := write("empty", " \n")
	big := write("big", strings.Repeat("a", maxJoinTokenFileBytes+1))
	missing := filepath.Join(dir, "missing")
	cases := []struct {
		name     string
		flags    credentialFlags
		want     sds.Credential
		workload bool
		wantErr  []string // each must be in the error
		errIs    error
	}{
		{name: "join token file", flags: credentialFlags{joinTokenFile: good}, want: sds.NewJoinToken("cmjt.abc")},
		{name: "join token", flags: credentialFlags{joinToken: "cmjt.abc"}, want: sds.NewJoinToken("cmjt.abc")},
		{name: "token file", flags: credentialFlags{tokenFile: "/var/run/token"}, want: sds.TokenFile{Path: "/var/run/token"}, workload: true},
		{name: "none", wantErr: []string{"--join-token-file", "--token-file", "required"}},
		{name: "join token and its file", flags: credentialFlags{joinToken: "x", joinTokenFile: good}, wantErr: []string{"--join-token and --join-token-file exclude each other"}},
		{name: "join token file and token file", flags: credentialFlags{joinTokenFile: good, tokenFile: "t"}, wantErr: []string{"--join-token-file and --token-file"}},
		{name: "missing file", flags: credentialFlags{joinTokenFile: missing}, wantErr: []string{"--join-token-file", missing}, errIs: fs.ErrNotExist},
		{name: "empty file", flags: credentialFlags{joinTokenFile: empty}, wantErr: []string{"--join-token-file", empty, "is empty"}},
		{name: "too large", flags: credentialFlags{joinTokenFile: big}, wantErr: []string{"--join-token-file", big, "larger than 4096 bytes"}},
		{name: "a directory", flags: credentialFlags{joinTokenFile: dir}, wantErr: []string{"--join-token-file", dir}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cred, workload, err := agentCredential(tc.flags)
			if tc.wantErr != nil {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					require.Contains(t, err.Error(), s)
				}
				if tc.errIs != nil {
					require.ErrorIs(t, err, tc.errIs)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.workload, workload)
			require.Equal(t, tc.want, cred)
		})
	}
}
