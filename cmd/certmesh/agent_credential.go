package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/certmesh/certmesh/sds"
)

// credentialFlags are the agent's bootstrap credential flags; exactly one is
// given.
type credentialFlags struct {
	joinToken     string // --join-token: visible in the process list
	joinTokenFile string // --join-token-file
	tokenFile     string // --token-file: workload mode
}

// maxJoinTokenFileBytes bounds --join-token-file: a join token is about 50
// bytes, so anything much larger is the wrong file.
const maxJoinTokenFileBytes = 4 << 10

// agentCredential picks the agent's bootstrap credential: a one-time join
// token (node mode), given in a file or on the command line, or a projected
// ServiceAccount token file (workload mode: the agent is a sidecar and its
// pod is the unit of identity).
func agentCredential(f credentialFlags) (cred sds.Credential, workloadMode bool, err error) {
	var given []string
	for _, c := range []struct{ name, value string }{
		{"--join-token", f.joinToken}, {"--join-token-file", f.joinTokenFile}, {"--token-file", f.tokenFile},
	} {
		if c.value != "" {
			given = append(given, c.name)
		}
	}
	switch {
	case len(given) > 1:
		return nil, false, fmt.Errorf("agent: %s exclude each other; give one", strings.Join(given, " and "))
	case f.tokenFile != "":
		return sds.TokenFile{Path: f.tokenFile}, true, nil
	case f.joinTokenFile != "":
		tok, err := readJoinTokenFile(f.joinTokenFile)
		if err != nil {
			return nil, false, err
		}
		return sds.NewJoinToken(tok), false, nil
	case f.joinToken != "":
		return sds.NewJoinToken(f.joinToken), false, nil
	}
	return nil, false, errors.New("agent: --join-token-file (or --join-token) or --token-file is required")
}

// readJoinTokenFile reads a join token from path: it must exist, hold
// something other than white space, and be at most maxJoinTokenFileBytes.
func readJoinTokenFile(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("agent: --join-token-file: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxJoinTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("agent: --join-token-file %s: %w", path, err)
	}
	if len(b) > maxJoinTokenFileBytes {
		return "", fmt.Errorf("agent: --join-token-file %s is larger than %d bytes: not a join token (about 50 bytes)", path, maxJoinTokenFileBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("agent: --join-token-file %s is empty", path)
	}
	return tok, nil
}
