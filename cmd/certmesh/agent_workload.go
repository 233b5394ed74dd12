package main

import (
	"errors"

	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// agentCredential picks the agent's bootstrap credential: a one-time join
// token (node mode) or a projected ServiceAccount token file (workload
// mode: the agent is a sidecar and its pod is the unit of identity).
func agentCredential(joinToken, tokenFile string) (cred sds.Credential, workloadMode bool, err error) {
	switch {
	case joinToken != "" && tokenFile != "":
		return nil, false, errors.New("agent: --join-token and --token-file exclude each other")
	case tokenFile != "":
		return sds.TokenFile{Path: tokenFile}, true, nil
	case joinToken != "":
		return sds.NewJoinToken(joinToken), false, nil
	}
	return nil, false, errors.New("agent: --join-token or --token-file is required")
}

// podAttestor serves the agent's own identity to every caller on its socket.
func podAttestor(agent *sds.Agent) identity.Attestor { return sds.PodAttestor{Agent: agent} }
