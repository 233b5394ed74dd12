package sds_test

import (
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

// TestSetWorkloadsWhileRunning: a workload added while the agent runs gets its
// SVID, a removed one stops being served at once (watchers are woken), and
// one that stays keeps the SVID it had.
func TestSetWorkloadsWhileRunning(t *testing.T) {
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	a := startAgent(t, c, web)
	webSerial := serial(t, a.Agent, web)
	_, ok := a.X509SVID(db)
	require.False(t, ok)

	a.SetWorkloads([]spiffeid.ID{web, db})
	waitFor(t, "db's SVID", func() bool { _, ok := a.X509SVID(db); return ok })
	require.Equal(t, webSerial, serial(t, a.Agent, web), "web's SVID is untouched")

	changed := a.Changed()
	a.SetWorkloads([]spiffeid.ID{db})
	_, ok = a.X509SVID(web)
	require.False(t, ok, "a removed workload is not served")
	select {
	case <-changed:
	default:
		t.Fatal("watchers were not told")
	}
	changed = a.Changed()
	a.SetWorkloads([]spiffeid.ID{db})
	select {
	case <-changed:
		t.Fatal("an unchanged set woke the watchers")
	default:
	}
	_, ok = a.X509SVID(db)
	require.True(t, ok)
}

// TestSetWorkloadsFollowsNodeScope: WorkloadOn is asked again at every
// change, so a registration moved to another node stops being served and
// one moved back is obtained again.
func TestSetWorkloadsFollowsNodeScope(t *testing.T) {
	c := startCA(t, t.TempDir(), "127.0.0.1:0")
	var mu sync.Mutex
	here := map[spiffeid.ID]bool{web: true, db: false}
	on := func(w, node spiffeid.ID) bool {
		mu.Lock()
		defer mu.Unlock()
		return node == nodeID && here[w]
	}
	a := startAgentWith(t, c, on, web, db)
	_, ok := a.X509SVID(db)
	require.False(t, ok, "db is another node's")

	mu.Lock()
	here[web], here[db] = false, true
	mu.Unlock()
	a.SetWorkloads([]spiffeid.ID{web, db})
	_, ok = a.X509SVID(web)
	require.False(t, ok, "web moved to another node")
	waitFor(t, "db's SVID", func() bool { _, ok := a.X509SVID(db); return ok })
}
