package server

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/certmesh/certmesh/identity"
)

// RegistrationsFileConfig names the registrations file (YAML) mapping
// workloads to SPIFFE IDs. The server follows it while running, so an edit
// applies to the next request and an edit that does not parse shows in
// `certmesh status` and in a metric instead of waiting for a restart to fail.
type RegistrationsFileConfig struct {
	Path string // off when empty
	// Poll is how often the file is checked (default identity.DefaultFollowPoll).
	Poll time.Duration
	// Reload rereads the file at once when it delivers (cmd feeds it SIGHUP).
	Reload <-chan os.Signal
}

// registrations is the followed file and who hears of its new versions.
type registrations struct {
	file     *identity.RegistrationsFile
	onChange []func(*identity.Registrations)
}

// OpenRegistrations opens a registrations file, which must name td, for
// `certmesh dev`, whose one in-process agent serves every entry: an entry
// without nodes is this machine's.
func OpenRegistrations(path string, td spiffeid.TrustDomain) (*identity.RegistrationsFile, error) {
	regs, err := identity.OpenRegistrations(path)
	return inTrustDomain(path, td, regs, err)
}

// OpenNodeRegistrations opens a registrations file that remote node agents
// use (`certmesh server`, `certmesh agent`): every entry must name its
// nodes, or "*" on purpose, so that one node broken into does not yield
// every identity.
func OpenNodeRegistrations(path string, td spiffeid.TrustDomain) (*identity.RegistrationsFile, error) {
	regs, err := identity.OpenNodeRegistrations(path)
	return inTrustDomain(path, td, regs, err)
}

// inTrustDomain passes on an opened file only if it names td.
func inTrustDomain(path string, td spiffeid.TrustDomain, regs *identity.RegistrationsFile, err error) (*identity.RegistrationsFile, error) {
	if err != nil {
		return nil, err
	}
	if regs.TrustDomain() != td {
		return nil, fmt.Errorf("%s: trustDomain %q differs from --trust-domain %q", path, regs.TrustDomain().Name(), td.Name())
	}
	return regs, nil
}

func (s *Server) openRegistrations() error {
	rc := s.cfg.RegistrationsFile
	if rc.Path == "" {
		return nil
	}
	open := OpenNodeRegistrations
	if s.cfg.LocalAgent != nil {
		open = OpenRegistrations
	}
	f, err := open(rc.Path, s.cfg.TrustDomain)
	if err != nil {
		return err
	}
	s.regs = &registrations{file: f}
	s.cfg.Registrations = f
	if s.cfg.Registerer != nil {
		for _, c := range RegistrationsMetrics(f) {
			if err := s.cfg.Registerer.Register(c); err != nil {
				return fmt.Errorf("server: metrics: %w", err)
			}
		}
	}
	return nil
}

// followRegistrations adds the file's follower to Run.
func (s *Server) followRegistrations() {
	if s.regs == nil {
		return
	}
	rc := s.cfg.RegistrationsFile
	s.runners = append(s.runners, func(ctx context.Context) error {
		return s.regs.file.Follow(ctx, identity.FollowParams{
			Poll: rc.Poll, Reload: rc.Reload, Logger: s.cfg.Logger,
			OnChange: func(r *identity.Registrations) {
				for _, f := range s.regs.onChange {
					f(r)
				}
			},
		})
	})
}

// RegistrationsMetrics export whether the file on disk is the one in force,
// so that an edit that does not parse can page someone instead of waiting for
// the next restart to fail.
func RegistrationsMetrics(f *identity.RegistrationsFile) []prometheus.Collector {
	return []prometheus.Collector{
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
	}
}
