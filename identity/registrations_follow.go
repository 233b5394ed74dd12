package identity

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// FollowParams says how Follow keeps a registrations file current.
type FollowParams struct {
	// Poll is how often the file is checked for changes (default 2s).
	Poll time.Duration
	// Reload, when it delivers, rereads the file at once (the caller feeds it
	// SIGHUP, so signals stay the command's business).
	Reload <-chan os.Signal
	Logger *slog.Logger
	// OnChange, when set, is called with each new version in force.
	OnChange func(*Registrations)
}

// DefaultFollowPoll is how often Follow checks the file when Poll is zero.
const DefaultFollowPoll = 2 * time.Second

// Follow keeps f current until ctx ends: it watches the file, reloads when p.Reload
// delivers, and calls p.OnChange with each new version in force. A broken version
// is logged and changes nothing.
func (f *RegistrationsFile) Follow(ctx context.Context, p FollowParams) error {
	if p.Poll <= 0 {
		p.Poll = DefaultFollowPoll
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() { defer close(watched); f.Watch(ctx, p.Poll, p.Logger) }()
	defer func() { cancel(); <-watched }()
	// changed is taken anew only after a change is handled, and before the
	// version is read: a reload in between is then seen on the next turn.
	changed := f.Changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.Reload:
			f.LogReload(p.Logger)
		case <-changed:
			changed = f.Changed()
			if p.OnChange != nil {
				p.OnChange(f.Current())
			}
		}
	}
}
