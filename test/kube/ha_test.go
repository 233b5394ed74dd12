package kube_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmesh/certmesh/ca"
	cak8s "github.com/certmesh/certmesh/ca/k8s"
	"github.com/certmesh/certmesh/ca/server"
	"github.com/certmesh/certmesh/test/harness"
)

// TestServersRaceToCreateCA starts several CAs, each with its own freshly
// generated root, and lets them publish to the same (absent) Secret at the
// same moment: exactly one Create wins, the others discard their material
// and load the winner's, so every replica ends with the same single CA.
func TestServersRaceToCreateCA(t *testing.T) {
	const replicas, rounds = 3, 4
	for round := range rounds {
		ns := cluster.Namespace(t)
		states := make([]*cak8s.State, replicas)
		cas := make([]*ca.CA, replicas)
		own := make([]string, replicas)
		for i := range replicas {
			c, err := ca.New(ca.Config{Dir: filepath.Join(t.TempDir(), strconv.Itoa(i)), TrustDomain: td})
			require.NoError(t, err)
			cas[i], own[i] = c, string(c.BundlePEM())
			states[i], err = cak8s.NewState(cak8s.StateConfig{Client: cluster.Client, Namespace: ns, TrustDomain: td}, c, nil)
			require.NoError(t, err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, replicas)
		for i := range replicas {
			wg.Go(func() {
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				errs[i] = states[i].Bootstrap(ctx)
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for i := range replicas {
			require.NoError(t, errs[i], "replica %d", i)
			require.Equal(t, string(cas[0].BundlePEM()), string(cas[i].BundlePEM()), "round %d: replica %d has another CA", round, i)
			if string(cas[i].BundlePEM()) == own[i] {
				winners++
			}
			require.Len(t, cas[i].Roots(), 1)
		}
		require.Equal(t, 1, winners, "exactly one replica's own CA survives")
		sec, err := cluster.Client.CoreV1().Secrets(ns).Get(context.Background(), cak8s.DefaultSecretName, metav1.GetOptions{})
		require.NoError(t, err)
		require.Equal(t, cas[0].BundlePEM(), sec.Data["authorities."+cas[0].Status().Authorities[0].ID+".root.crt"])
	}
}

// TestLeaderHandover runs two replicas. The leader starts a root rotation;
// the follower loads it from the Secret. The leader then dies without
// releasing its Lease (as a crash would); the follower takes over within
// the lease duration and finishes the rotation the old leader started.
func TestLeaderHandover(t *testing.T) {
	ns := cluster.Namespace(t)
	timing := &server.KubernetesConfig{LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond, KeepLeaseOnStop: true}
	const overlap = 4 * time.Second
	a := startServer(t, serverOpts{ns: ns, identity: "replica-a", lease: timing, overlap: overlap})
	b := startServer(t, serverOpts{ns: ns, identity: "replica-b", lease: timing, overlap: overlap})
	harness.WaitFor(t, 10*time.Second, "a leader", func() bool { return a.Leader.IsLeader() || b.Leader.IsLeader() })
	leader, follower := a, b
	if b.Leader.IsLeader() {
		leader, follower = b, a
	}
	require.False(t, follower.Leader.IsLeader())
	require.Equal(t, string(leader.CA.BundlePEM()), string(follower.CA.BundlePEM()), "one CA")

	prepared, err := leader.CA.Rotate()
	require.NoError(t, err)
	harness.WaitFor(t, 10*time.Second, "follower loads the prepared root", func() bool { return len(follower.CA.Roots()) == 2 })

	leader.stop()
	took := harness.WaitFor(t, timing.LeaseDuration+5*time.Second, "follower takes over", follower.Leader.IsLeader)
	t.Logf("handover after the leader died: %v (lease duration %v)", took, timing.LeaseDuration)
	require.LessOrEqual(t, took, timing.LeaseDuration+2*timing.RetryPeriod+time.Second)

	// Nothing lost: the new leader activates the root the old one prepared.
	harness.WaitFor(t, overlap+10*time.Second, "rotation finished by the new leader", func() bool {
		st := follower.CA.Status()
		for _, au := range st.Authorities {
			if au.ID == prepared.ID && au.Phase == ca.PhaseActive {
				return true
			}
		}
		return false
	})
	harness.WaitFor(t, 10*time.Second, "the Secret records the new leader's step", func() bool {
		sec, err := cluster.Client.CoreV1().Secrets(ns).Get(context.Background(), cak8s.DefaultSecretName, metav1.GetOptions{})
		var state ca.RotationState
		if err != nil || json.Unmarshal(sec.Data["state.json"], &state) != nil {
			return false
		}
		act, ok := state.Active()
		return ok && act.ID == prepared.ID
	})
}

// TestRotateOnlyOnLeader: an operator's `ca rotate` reaching a follower is
// refused with the leader's name (the follower's write could be lost to the
// leader's next step); on the leader it starts the rotation, which the
// follower then loads.
func TestRotateOnlyOnLeader(t *testing.T) {
	ns := cluster.Namespace(t)
	a := startServer(t, serverOpts{ns: ns, identity: "replica-a"})
	b := startServer(t, serverOpts{ns: ns, identity: "replica-b"})
	harness.WaitFor(t, 10*time.Second, "a leader both replicas know", func() bool {
		return (a.Leader.IsLeader() || b.Leader.IsLeader()) && a.Leader.Current() != "" && b.Leader.Current() != ""
	})
	leader, follower := a, b
	if b.Leader.IsLeader() {
		leader, follower = b, a
	}
	_, err := follower.Rotate()
	require.ErrorIs(t, err, server.ErrNotLeader)
	require.ErrorContains(t, err, "the leader is "+leader.Leader.Identity())
	require.Len(t, follower.CA.Roots(), 1, "the follower changed nothing")

	_, err = leader.Rotate()
	require.NoError(t, err)
	harness.WaitFor(t, 10*time.Second, "follower loads the prepared root", func() bool { return len(follower.CA.Roots()) == 2 })
	_, err = follower.ForceRotate()
	require.ErrorIs(t, err, server.ErrNotLeader, "--force, too, is the leader's")
	require.ErrorContains(t, err, "certmesh ca rotate --force")
}
