package leader

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewChecksConfig(t *testing.T) {
	client := fake.NewClientset()
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{name: "complete", cfg: Config{Client: client, Namespace: "certmesh", Identity: "a"}, ok: true},
		{name: "no client", cfg: Config{Namespace: "certmesh", Identity: "a"}},
		{name: "no namespace", cfg: Config{Client: client, Identity: "a"}},
		{name: "no identity", cfg: Config{Client: client, Namespace: "certmesh"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.cfg)
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, DefaultLeaseName, l.cfg.Name)
			require.Equal(t, DefaultLeaseDuration, l.cfg.LeaseDuration)
			require.Equal(t, DefaultRenewDeadline, l.cfg.RenewDeadline)
			require.Equal(t, DefaultRetryPeriod, l.cfg.RetryPeriod)
		})
	}
}

func TestAddRefusesDuplicateNames(t *testing.T) {
	l, err := New(Config{Client: fake.NewClientset(), Namespace: "certmesh", Identity: "a"})
	require.NoError(t, err)
	noop := func(context.Context) error { return nil }
	require.NoError(t, l.Add("work", noop))
	require.Error(t, l.Add("work", noop))
}

// TestRunLeadsAndReleases: the only replica takes the Lease, runs its Runners with a
// context that ends with Run's, and gives the Lease up when it stops.
func TestRunLeadsAndReleases(t *testing.T) {
	client := fake.NewClientset()
	l, err := New(Config{Client: client, Namespace: "certmesh", Identity: "a"})
	require.NoError(t, err)
	started := make(chan struct{})
	require.NoError(t, l.Add("work", func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the Runner never started")
	}
	require.True(t, l.IsLeader())
	require.Equal(t, int64(1), l.Terms())
	// client-go reports the new leader from a goroutine of its own.
	require.Eventually(t, func() bool { return l.Current() == "a" }, 30*time.Second, 10*time.Millisecond)
	require.Error(t, l.Add("late", func(context.Context) error { return nil }), "Add after Run")

	cancel()
	require.NoError(t, <-done)
	require.False(t, l.IsLeader())
	lease, err := client.CoordinationV1().Leases("certmesh").Get(context.Background(), DefaultLeaseName, metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, lease.Spec.HolderIdentity, "released on stop")
}
