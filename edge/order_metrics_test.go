package edge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestOrderMetricsCountFailuresByType(t *testing.T) {
	m := NewOrderMetrics(prometheus.NewRegistry())
	m.observeFailure(fmt.Errorf("obtain: %w", &acme.ProblemDetails{Type: "urn:ietf:params:acme:error:rateLimited"}))
	m.observeFailure(fmt.Errorf("obtain: %w", &acme.ProblemDetails{Type: "urn:ietf:params:acme:error:rateLimited"}))
	m.observeFailure(errors.New("disk"))
	m.observeOrder(2*time.Second, nil)
	require.Equal(t, 2.0, testutil.ToFloat64(m.errors.WithLabelValues("rateLimited")))
	require.Equal(t, 1, testutil.CollectAndCount(m.duration))
	var none *OrderMetrics
	none.observeFailure(errors.New("x")) // nil metrics are a no-op
}
