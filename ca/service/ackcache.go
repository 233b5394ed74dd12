package service

import (
	"crypto/sha256"
	"sync"
	"time"
)

// ackAttestTTL is how long a workload agent's attested token stands for its
// acknowledgement reports without another TokenReview. Reports come every
// 10 s, as long as the review cache lasts, so without this nearly every
// report of every pod would cost the apiserver a review. A report grants
// nothing: a pod deleted meanwhile only keeps its slot this much longer
// (and its slot ages out as any other). Certificates are never served from
// this cache.
const ackAttestTTL = time.Minute

// ackTokens remembers which slot an attested token fills.
type ackTokens struct {
	mu      sync.Mutex
	entries map[[32]byte]ackToken
}

type ackToken struct {
	slot  string
	svid  string // the client SVID presented beside the token, if any
	until time.Time
}

// lookup returns the slot token was attested for, if that was less than
// ackAttestTTL ago and the same client SVID (or none) is presented.
func (c *ackTokens) lookup(token, svid string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[sha256.Sum256([]byte(token))]
	if !ok || e.svid != svid || !now.Before(e.until) {
		return "", false
	}
	return e.slot, true
}

// remember records an attestation, dropping expired entries when the map
// is full so it stays bounded by the number of live agents.
func (c *ackTokens) remember(token, svid, slot string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[[32]byte]ackToken{}
	}
	if len(c.entries) >= maxAckAgents {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxAckAgents {
			return
		}
	}
	c.entries[sha256.Sum256([]byte(token))] = ackToken{slot: slot, svid: svid, until: now.Add(ackAttestTTL)}
}
