package ingress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"k8s.io/utils/clock"
)

// ErrSelfCheck reports that the challenge path never answered through the ingress.
var ErrSelfCheck = errors.New("ingress: http-01 self-check failed")

// selfCheck waits until GET http://<domain>/.well-known/acme-challenge/<token>, sent
// through the cluster's ingress, answers keyAuth — as cert-manager does before it lets
// the CA validate. An ingress controller needs a moment to pick up the new rule, and a
// validation the CA sees fail counts against its failed-validation limit (Let's
// Encrypt: 5 per hour per account and host).
type selfCheck struct {
	client   *http.Client
	clock    clock.Clock
	interval time.Duration
	timeout  time.Duration
}

// wait polls until the answer is right, the timeout passes or ctx ends.
func (s *selfCheck) wait(ctx context.Context, domain, token, keyAuth string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	url := "http://" + domain + acmeChallengePrefix + token
	var last error
	for attempt := 0; ; attempt++ {
		if last = s.probe(ctx, url, keyAuth); last == nil {
			return nil
		}
		t := s.clock.NewTimer(s.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %s after %d attempts: %w", ErrSelfCheck, url, attempt+1, last)
		case <-t.C():
		}
	}
}

func (s *selfCheck) probe(ctx context.Context, url, keyAuth string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != keyAuth {
		return fmt.Errorf("status %d, %d bytes not matching the key authorization", resp.StatusCode, len(body))
	}
	return nil
}
