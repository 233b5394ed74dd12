package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/identity"
)

// registrationsPoll is how often a running server, agent or dev checks its
// registrations file for changes; SIGHUP reloads at once.
const registrationsPoll = 2 * time.Second

// openRegistrations opens the --registrations file, which must name the
// --trust-domain.
func openRegistrations(path string, td spiffeid.TrustDomain) (*identity.RegistrationsFile, error) {
	regs, err := identity.OpenRegistrations(path)
	if err != nil {
		return nil, err
	}
	if regs.TrustDomain() != td {
		return nil, fmt.Errorf("%s: trustDomain %q differs from --trust-domain %q", path, regs.TrustDomain().Name(), td.Name())
	}
	return regs, nil
}

// followRegistrations keeps f current until ctx ends: it watches the file,
// reloads on SIGHUP, and calls onChange (when set) with each new version in
// force. A broken version is logged and changes nothing.
func followRegistrations(ctx context.Context, f *identity.RegistrationsFile, log *slog.Logger, onChange func(*identity.Registrations)) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() { defer close(watched); f.Watch(ctx, registrationsPoll, log) }()
	defer func() { cancel(); <-watched }()
	// changed is taken anew only after a change is handled, and before the
	// version is read: a reload in between is then seen on the next turn.
	changed := f.Changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			f.LogReload(log)
		case <-changed:
			changed = f.Changed()
			if onChange != nil {
				onChange(f.Current())
			}
		}
	}
}

// registerRegistrationsMetrics exports whether the file on disk is the one in
// force, so that an edit that does not parse can page someone instead of
// waiting for the next restart to fail.
func registerRegistrationsMetrics(reg prometheus.Registerer, f *identity.RegistrationsFile) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "certmesh_registrations_file_in_force",
			Help: "1 when the registrations file on disk is the version in force, 0 while its last edit is refused (see the log for file and line).",
		}, func() float64 {
			if f.Err() != nil {
				return 0
			}
			return 1
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "certmesh_registrations_entries",
			Help: "Workload entries in the registrations in force.",
		}, func() float64 { return float64(f.Current().Len()) }),
	)
}

// addRegistrationsStatus adds the file's state to the admin status, so that
// `certmesh status` shows an edit that is not in force.
func addRegistrationsStatus(cfg *server.Config, f *identity.RegistrationsFile) {
	if f != nil {
		addStatus(cfg, func() map[string]any { return map[string]any{"registrations": f.Status()} })
	}
}

// addStatus adds extra's sections to the admin status, after those already
// there (the edge's, the mesh's).
func addStatus(cfg *server.Config, extra func() map[string]any) {
	prev := cfg.StatusExtra
	cfg.StatusExtra = func() map[string]any {
		out := map[string]any{}
		if prev != nil {
			maps.Copy(out, prev())
		}
		maps.Copy(out, extra())
		return out
	}
}

// workloadIDs are the identities of regs' entries.
func workloadIDs(regs *identity.Registrations) []spiffeid.ID {
	var ids []spiffeid.ID
	for _, e := range regs.Entries() {
		ids = append(ids, e.ID)
	}
	return ids
}
