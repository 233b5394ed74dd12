package main

import (
	"fmt"
	"log/slog"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/certmesh/certmesh/edge/secretstore"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// podAttestor serves the agent's own identity to every caller on its socket,
// and the edge Secrets the gateway pod was given.
func podAttestor(agent *sds.Agent, edge []string) identity.Attestor {
	return sds.PodAttestor{Agent: agent, EdgeCertificates: edge}
}

// edgeSecrets builds the watcher of an ingress gateway's edge Secrets
// (--edge-secret ns/name,…), with the in-cluster or --kubeconfig client.
func edgeSecrets(list, kubeconfig string, log *slog.Logger) (*secretstore.Watcher, error) {
	if list == "" {
		return nil, nil
	}
	rc, err := (&kubeFlags{kubeconfig: kubeconfig}).restConfig()
	if err != nil {
		return nil, fmt.Errorf("--edge-secret: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("--edge-secret: %w", err)
	}
	return secretstore.NewWatcher(client, strings.Split(list, ","), log)
}
