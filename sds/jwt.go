package sds

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// jwtCache keeps JWT-SVIDs until half their life has passed, so a workload
// asking on every request does not turn into a CA call per request.
type jwtCache struct {
	mu      sync.Mutex
	entries map[string]*jwtsvid.SVID
}

func jwtKey(id spiffeid.ID, audience []string) string {
	aud := slices.Clone(audience)
	slices.Sort(aud)
	return id.String() + "\x00" + strings.Join(aud, "\x00")
}

// maxJWTCacheEntries bounds memory against callers inventing audiences.
const maxJWTCacheEntries = 4096

// FetchJWTSVID returns a JWT-SVID for id (the agent's own or a workload's it
// keeps) signed by the CA, from cache while it has more than half its life.
func (a *Agent) FetchJWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (*jwtsvid.SVID, error) {
	key := jwtKey(id, audience)
	now := a.cfg.Clock.Now()
	a.jwts.mu.Lock()
	if s, ok := a.jwts.entries[key]; ok && now.Before(s.Expiry.Add(-jwtHalfLife(s))) {
		a.jwts.mu.Unlock()
		return s, nil
	}
	a.jwts.mu.Unlock()

	own, ok := a.validOwn()
	if !ok {
		return nil, ErrNoCredential
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var bearer string
	if presentsCredentialEachTime(a.cfg.Credential) {
		// The CA re-attests an identity that came from a token (a pod's
		// ServiceAccount), so the token goes with every request.
		bearer, _ = a.cfg.Credential.Token()
	}
	svid, err := a.client.fetchJWT(rctx, own, bearer, id, audience, a.JWTBundle())
	if err != nil {
		return nil, err
	}
	a.jwts.mu.Lock()
	if a.jwts.entries == nil || len(a.jwts.entries) >= maxJWTCacheEntries {
		a.jwts.entries = map[string]*jwtsvid.SVID{}
	}
	a.jwts.entries[key] = svid
	a.jwts.mu.Unlock()
	return svid, nil
}

func jwtHalfLife(s *jwtsvid.SVID) time.Duration {
	if iat, ok := s.Claims["iat"].(float64); ok {
		return s.Expiry.Sub(time.Unix(int64(iat), 0)) / 2
	}
	return time.Minute
}
