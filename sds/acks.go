package sds

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/certmesh/certmesh/ca/wire"
)

// watcherAcks tracks which trust bundle every watcher holds — each SDS stream
// (what its Envoy ACKed) and each Workload API X.509 stream (what was sent).
// The agent reports the count that lag behind its own bundle to the CA, which
// holds a rotation until none does.
type watcherAcks struct {
	mu      sync.Mutex
	streams map[string][32]byte
	changed chan struct{}
}

func newWatcherAcks() *watcherAcks {
	return &watcherAcks{streams: map[string][32]byte{}, changed: make(chan struct{})}
}

func (w *watcherAcks) set(key string, d [32]byte, gone bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.streams[key]; (ok && old == d && !gone) || (!ok && gone) {
		return
	}
	if gone {
		delete(w.streams, key)
	} else {
		w.streams[key] = d
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// lagging counts watchers whose bundle is not current, and all watchers.
func (w *watcherAcks) lagging(current [32]byte) (lag, total int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.streams {
		if d != current {
			lag++
		}
	}
	return lag, len(w.streams)
}

func (w *watcherAcks) watch() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// scopedAcks is one handler's view: stream numbers are per handler.
type scopedAcks struct {
	w      *watcherAcks
	prefix string
}

func (s scopedAcks) BundleAcked(stream uint64, d [32]byte) {
	s.w.set(fmt.Sprintf("%s/%d", s.prefix, stream), d, false)
}

func (s scopedAcks) StreamGone(stream uint64) {
	s.w.set(fmt.Sprintf("%s/%d", s.prefix, stream), [32]byte{}, true)
}

// Report pacing: changes are coalesced for a moment (10,000 streams ACK a
// rotation within a fraction of a second), and an unchanged state is
// repeated as a heartbeat so the CA can tell a live agent from a gone one.
const (
	ackCoalesce  = 100 * time.Millisecond
	ackHeartbeat = 10 * time.Second
)

// reportAcks tells the CA which bundle this agent and its watchers hold. It
// stops when the CA answers PermissionDenied: the CA does not count this
// agent (an identity it takes no reports from), and asking again every
// heartbeat would only add a refusal to its log and counters each time.
func (a *Agent) reportAcks(ctx context.Context) {
	var last wire.AckReport
	next := time.Time{}
	for {
		acksChanged, agentChanged := a.acks.watch(), a.Changed()
		if r, ok := a.ackReport(); ok && (r != last || !a.cfg.Clock.Now().Before(next)) {
			if err := a.sendAckReport(ctx, r); status.Code(err) == codes.PermissionDenied {
				a.cfg.Logger.Info("the CA takes no bundle acknowledgements from this agent; not reporting them again until restarted",
					attrError, err.Error())
				return
			} else if err != nil {
				a.cfg.Logger.Debug("bundle acknowledgement report failed", attrError, err.Error())
			} else {
				last, next = r, a.cfg.Clock.Now().Add(ackHeartbeat)
			}
		}
		t := a.cfg.Clock.NewTimer(ackHeartbeat)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-acksChanged:
		case <-agentChanged:
		case <-t.C():
		}
		t.Stop()
		if !a.sleepUntil(ctx, a.cfg.Clock.Now().Add(ackCoalesce)) {
			return
		}
	}
}

func (a *Agent) ackReport() (wire.AckReport, bool) {
	if _, ok := a.validOwn(); !ok {
		return wire.AckReport{}, false
	}
	d := wire.BundleDigest(a.X509Bundle().X509Authorities())
	lag, total := a.acks.lagging(d)
	return wire.AckReport{Instance: a.instance, Bundle: hex.EncodeToString(d[:]), Lagging: lag, Watchers: total}, true
}

// sendAckReport authenticates as the agent renews: with its SVID over mTLS,
// and in workload mode also with its pod's token, which the CA attests to
// find the pod the report is counted for.
func (a *Agent) sendAckReport(ctx context.Context, r wire.AckReport) error {
	own, ok := a.validOwn()
	if !ok {
		return ErrNoCredential
	}
	conn, err := a.client.conn(own)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if presentsCredentialEachTime(a.cfg.Credential) {
		tok, ok := a.cfg.Credential.Token()
		if !ok {
			return ErrNoCredential
		}
		rctx = metadata.AppendToOutgoingContext(rctx, wire.AuthorizationKey, "Bearer "+tok)
	}
	return wire.SendAckReport(rctx, conn, r)
}
