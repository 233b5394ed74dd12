package ca

import "time"

// Status describes the CA for `certmesh ca inspect` and `certmesh status`.
type Status struct {
	TrustDomain string          `json:"trustDomain"`
	Phase       string          `json:"phase"`
	Authorities []AuthorityInfo `json:"authorities"`
	// NextEvent is the earliest next step of any authority: a root switch
	// or retirement, an intermediate renewal or retirement.
	NextEvent time.Time `json:"nextEvent,omitzero"`
	// Overdue is how long NextEvent lies in the past: a step that is due
	// and has not happened (held by the gate, or failing). 0 when none.
	Overdue time.Duration `json:"overdue,omitempty"`
	// Lagging counts watchers (SDS streams, Workload API streams, agents)
	// that do not hold the current bundle yet; a due switch waits for 0.
	Lagging     int  `json:"watchersLagging"`
	WaitingGate bool `json:"waitingForWatchers,omitempty"`
	// ForcedActivations counts switches an operator forced past the gate
	// (`certmesh ca rotate --force`) since this process started.
	ForcedActivations int `json:"forcedActivations,omitempty"`
	// RenewalFailures counts failed intermediate renewals since start.
	RenewalFailures int              `json:"intermediateRenewalFailures,omitempty"`
	State           []AuthorityState `json:"-"`
}

// Kinds of an authority's next step (AuthorityInfo.NextStepKind).
const (
	StepActivate           = "activate root"
	StepRetire             = "retire root"
	StepRenewIntermediate  = "renew intermediate"
	StepRetireIntermediate = "retire old intermediate"
)

// AuthorityInfo is one authority as shown to an operator.
type AuthorityInfo struct {
	AuthorityState
	RootSubject     string    `json:"rootSubject"`
	RootNotAfter    time.Time `json:"rootNotAfter"`
	IntermediateEnd time.Time `json:"intermediateNotAfter"`
	// IntermediateStart is the signing intermediate's NotBefore.
	IntermediateStart time.Time `json:"intermediateNotBefore"`
	HasRootKey        bool      `json:"hasRootKey"`
	JWTKeyID          string    `json:"jwtKeyID,omitempty"`
	// NextStep is when this authority next moves, and NextStepKind how.
	NextStep     time.Time `json:"nextStep,omitzero"`
	NextStepKind string    `json:"nextStepKind,omitempty"`
	// NotRenewable says why its intermediate is not renewed automatically.
	NotRenewable string `json:"intermediateNotRenewable,omitempty"`
}

// nextStep is an authority's earliest next step: its phase's (activation,
// retirement), an old intermediate's retirement, or its intermediate's
// renewal. Pure.
func nextStep(s AuthorityState, inter IntermediateStep) (time.Time, string) {
	var at time.Time
	var kind string
	consider := func(t time.Time, k string) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at, kind = t, k
		}
	}
	switch s.Phase {
	case PhasePrepared:
		consider(s.ActivateAt, StepActivate)
	case PhaseRetiring:
		consider(s.RetireAt, StepRetire)
	}
	for _, o := range s.OldIntermediates {
		consider(o.RetireAt, StepRetireIntermediate)
	}
	consider(inter.At, StepRenewIntermediate)
	return at, kind
}

// finish fills NextEvent and Overdue from the authorities' next steps.
func (st *Status) finish(now time.Time) {
	for _, a := range st.Authorities {
		if !a.NextStep.IsZero() && (st.NextEvent.IsZero() || a.NextStep.Before(st.NextEvent)) {
			st.NextEvent = a.NextStep
		}
	}
	if !st.NextEvent.IsZero() && now.After(st.NextEvent) {
		st.Overdue = now.Sub(st.NextEvent)
	}
}

// Status returns a snapshot of the CA's authorities and rotation phase.
func (c *CA) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock.Now()
	st := Status{TrustDomain: c.cfg.TrustDomain.Name(), Phase: c.state.CurrentPhase(),
		State: c.state.clone().Authorities, Lagging: c.lagging, WaitingGate: c.held, ForcedActivations: c.forced,
		RenewalFailures: c.renewFailures}
	for _, s := range c.state.Authorities {
		a := c.authorities[s.ID]
		info := AuthorityInfo{
			AuthorityState: s, RootSubject: a.Root.Subject.String(), RootNotAfter: a.Root.NotAfter,
			IntermediateEnd: a.Intermediate.NotAfter, IntermediateStart: a.Intermediate.NotBefore, HasRootKey: a.RootKey != nil,
		}
		if k := c.jwtKeyOf(s.ID); k != nil {
			info.JWTKeyID = k.kid
		}
		inter := c.intermediateStep(now, s)
		info.NextStep, info.NextStepKind = nextStep(s, inter)
		info.NotRenewable = inter.NotRenewable
		st.Authorities = append(st.Authorities, info)
	}
	st.finish(now)
	return st
}
