package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/identity"
	"github.com/certmesh/certmesh/sds"
)

// What `certmesh agent` shares with the server, which does the same for itself
// (server.Config's RegistrationsFile and MetricsAddr): thin calls into
// ca/server and identity, kept under agent.go's names so agent.go is unchanged.

// openRegistrations opens the --registrations file, which must name the
// --trust-domain and scope every entry to its nodes (or "*").
func openRegistrations(path string, td spiffeid.TrustDomain) (*identity.RegistrationsFile, error) {
	return server.OpenNodeRegistrations(path, td)
}

// followRegistrations keeps f current until ctx ends, reloading on SIGHUP and
// calling onChange (when set) with each new version in force.
func followRegistrations(ctx context.Context, f *identity.RegistrationsFile, log *slog.Logger, onChange func(*identity.Registrations)) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return f.Follow(ctx, identity.FollowParams{Reload: hup, Logger: log, OnChange: onChange})
}

// registerRegistrationsMetrics exports whether the file on disk is in force.
func registerRegistrationsMetrics(reg prometheus.Registerer, f *identity.RegistrationsFile) {
	reg.MustRegister(server.RegistrationsMetrics(f)...)
}

// workloadIDs are the identities of regs' entries.
func workloadIDs(regs *identity.Registrations) []spiffeid.ID {
	var ids []spiffeid.ID
	for _, e := range regs.Entries() {
		ids = append(ids, e.ID)
	}
	return ids
}

func newRegistry() *prometheus.Registry { return server.NewRegistry() }

func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, ready func() bool) error {
	return server.ServeMetrics(ctx, addr, reg, ready)
}

// isReady says whether the agent holds its SVIDs.
func isReady(a *sds.Agent) func() bool {
	return func() bool {
		select {
		case <-a.Ready():
			return true
		default:
			return false
		}
	}
}
