package envoy

import (
	"slices"
	"sync"
	"sync/atomic"
)

// unackedBudget bounds the bytes a stream may have sent that its Envoy has
// not answered yet (ACK or NACK) before the fan-out stops pushing to it.
//
// It is what makes it safe to push from a small shared pool: gRPC's Send
// blocks only when more than its per-stream write quota (64 KiB) is queued
// but not yet written to the connection, and bytes Envoy has answered were
// written. Below the budget a Send therefore never waits for the client,
// so a hung Envoy cannot hold a pool worker. Half the quota leaves room for
// framing. A change found over the budget is deferred (stream.deferred)
// and sent once Envoy answers, on the stream's own goroutine.
const unackedBudget = 32 << 10

// fanout delivers source changes to the open streams. Each stream's own
// goroutine waits in Recv; one watcher waits on Source.Changed and, when it
// fires, a few short-lived workers walk the streams and push to each. That
// is one goroutine per handler instead of one per stream.
//
// The watcher runs only while streams are open: the first stream starts it
// and the last one stops it, because the handler has no Run of its own and
// must leave nothing behind once its gRPC server stops.
type fanout struct {
	mu      sync.Mutex
	streams []*stream
	// stop ends the running watcher; nil while none runs.
	stop chan struct{}
}

// register adds s to the fan-out, starting the watcher for the first stream.
// The watcher's first Changed is fetched here, before s handles any request,
// so a change landing between this call and the watcher's start is not
// missed.
func (h *Handler) register(s *stream) {
	f := &h.fan
	f.mu.Lock()
	defer f.mu.Unlock()
	s.slot = len(f.streams)
	f.streams = append(f.streams, s)
	if f.stop == nil {
		f.stop = make(chan struct{})
		go h.watch(f.stop, h.src.Changed())
	}
}

// unregister removes s, stopping the watcher with the last stream.
func (h *Handler) unregister(s *stream) {
	f := &h.fan
	f.mu.Lock()
	defer f.mu.Unlock()
	last := len(f.streams) - 1
	f.streams[s.slot] = f.streams[last]
	f.streams[s.slot].slot = s.slot
	f.streams[last] = nil
	f.streams = f.streams[:last]
	if last == 0 {
		close(f.stop)
		f.stop = nil
	}
}

// watch waits for changes until stop. The next Changed is fetched before
// the walk, so a change landing during a walk causes another one.
func (h *Handler) watch(stop <-chan struct{}, changed <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-changed:
		}
		changed = h.src.Changed()
		h.walk()
	}
}

// walk notifies every open stream through at most h.pushWorkers workers and
// returns when all have been notified. Workers never wait on a stream: one
// that is busy is left a flag, and a push happens only under the unacked
// budget, so a slow Envoy delays nobody else.
func (h *Handler) walk() {
	h.fan.mu.Lock()
	streams := slices.Clone(h.fan.streams)
	h.fan.mu.Unlock()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(h.pushWorkers, len(streams)) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(streams)); i = next.Add(1) - 1 {
				streams[i].notify()
			}
		})
	}
	wg.Wait()
}

// notify tells s that the source changed. If another goroutine holds the
// stream (its own goroutine handling a request, or a push in progress), the
// flag is left for it: it looks again after unlocking.
//
// Only the stream's own goroutine can end the stream, so a push that fails
// here does not: a failed Send marks it done (Recv fails next and ends it),
// and any other failure, logged by push, is retried at the next change.
func (s *stream) notify() {
	s.changed.Store(true)
	if s.mu.TryLock() {
		_ = s.settle()
	}
}

// settle sends what changed while the caller held mu, then unlocks. It is
// called with mu held. The flag is read again after Unlock: a notify that
// failed TryLock set it before this Unlock, so either this loop sees it or
// the goroutine that took the lock in between does.
func (s *stream) settle() error {
	for {
		var err error
		if changed := s.changed.Swap(false); !s.done && (changed || s.deferred) {
			err = s.pushChange()
		}
		s.mu.Unlock()
		if err != nil || !s.changed.Load() || !s.mu.TryLock() {
			return err
		}
	}
}

// pushChange sends a change, unless the stream is over its unacked budget:
// then it waits for Envoy's next answer (onRequest resets the budget and the
// stream's goroutine settles again).
func (s *stream) pushChange() error {
	if s.unacked >= unackedBudget {
		s.deferred = true
		return nil
	}
	s.deferred = false
	return s.push(false)
}
