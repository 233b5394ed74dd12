package sds

import (
	"context"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// workloadSlots runs one maintain goroutine per wanted workload, so that the
// set can change while the agent runs (a registrations file edited in place).
type workloadSlots struct {
	mu     sync.Mutex
	ctx    context.Context // Run's; nil before Run
	cancel map[spiffeid.ID]context.CancelFunc
	wg     sync.WaitGroup
}

// startSlots starts a goroutine for every wanted workload; later changes come
// through SetWorkloads.
func (a *Agent) startSlots(ctx context.Context) {
	a.slots.mu.Lock()
	defer a.slots.mu.Unlock()
	a.slots.ctx, a.slots.cancel = ctx, map[spiffeid.ID]context.CancelFunc{}
	a.mu.RLock()
	ids := make([]spiffeid.ID, 0, len(a.wanted))
	for id := range a.wanted {
		ids = append(ids, id)
	}
	a.mu.RUnlock()
	for _, id := range ids {
		a.startSlotLocked(id)
	}
}

func (a *Agent) startSlotLocked(id spiffeid.ID) {
	ctx, cancel := context.WithCancel(a.slots.ctx)
	a.slots.cancel[id] = cancel
	a.slots.wg.Go(func() { a.maintain(ctx, a.workloadSlot(id)) })
}

func (s *workloadSlots) wait() { s.wg.Wait() }

// SetWorkloads replaces the registered identities the agent keeps SVIDs for.
// A new one is obtained at once; a removed one, or one WorkloadOn now places
// on other nodes, stops being renewed and is no longer served (every watcher
// is told); one placed back on this node is obtained again. Workloads that
// stay keep their SVIDs untouched. It may be called before or while Run
// runs; after Run has returned it only records the set.
func (a *Agent) SetWorkloads(ids []spiffeid.ID) {
	want := make(map[spiffeid.ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	a.slots.mu.Lock()
	defer a.slots.mu.Unlock()
	running := a.slots.ctx != nil && a.slots.ctx.Err() == nil
	own, _ := a.validOwn()
	here := func(id spiffeid.ID) bool { // unknown until the agent has joined
		return own == nil || a.cfg.WorkloadOn == nil || a.cfg.WorkloadOn(id, own.ID)
	}
	var started, stopped int
	a.mu.Lock()
	for id := range want {
		if _, ok := a.wanted[id]; !ok {
			a.wanted[id] = !here(id)
			if !a.wanted[id] && running {
				a.startSlotLocked(id)
			}
			started++
		}
	}
	for id, elsewhere := range a.wanted {
		switch {
		case !want[id] || (!elsewhere && !here(id)):
			if cancel, ok := a.slots.cancel[id]; ok {
				cancel()
				delete(a.slots.cancel, id)
			}
			delete(a.svids, id)
			if want[id] {
				a.wanted[id] = true
			} else {
				delete(a.wanted, id)
			}
			stopped++
		case elsewhere && here(id):
			a.wanted[id] = false
			if running {
				a.startSlotLocked(id)
			}
			started++
		}
	}
	a.mu.Unlock()
	if started+stopped == 0 {
		return
	}
	a.cfg.Logger.Info("workloads changed", "started", started, "stopped", stopped, "wanted", len(want))
	a.notify()
	a.checkReady()
}
