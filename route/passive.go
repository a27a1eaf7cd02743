package route

import (
	"sync"
	"sync/atomic"
	"time"
)

// PassiveHealth configures how dial results take a member out: after Failures consecutive
// failures the member is skipped for Backoff; when the back-off ends the member is tried again
// (probation); a failure then takes it out for twice as long, up to MaxBackoff, and a success
// at any time brings it back with the back-off reset.
type PassiveHealth struct {
	Failures   int           // default 3
	Backoff    time.Duration // default 1s
	MaxBackoff time.Duration // default 30s
}

func (p PassiveHealth) withDefaults() PassiveHealth {
	if p.Failures <= 0 {
		p.Failures = 3
	}
	if p.Backoff <= 0 {
		p.Backoff = time.Second
	}
	if p.MaxBackoff < p.Backoff {
		p.MaxBackoff = max(30*time.Second, p.Backoff)
	}
	return p
}

// passiveState is the member's passive health state machine.
type passiveState uint8

const (
	healthy passiveState = iota // no failure since the last success
	suspect                     // 1..Failures-1 consecutive failures: still picked
	down                        // skipped until downUntil, then on probation (picked again;
	//                             the next result decides)
)

// passive is read lock-free by Usable (downUntil) and by success when nothing needs clearing
// (dirty); every state change takes mu, and those are rare.
type passive struct {
	downUntil atomic.Int64 // unix nanos; 0 when not down
	dirty     atomic.Bool  // state != healthy: a success has something to clear

	mu      sync.Mutex
	cfg     PassiveHealth
	state   passiveState
	fails   int
	backoff time.Duration // length of the next down period
}

func (p *passive) setConfig(c PassiveHealth) {
	c = c.withDefaults()
	p.mu.Lock()
	p.cfg = c
	if p.state == healthy || p.backoff < c.Backoff {
		p.backoff = c.Backoff
	}
	p.backoff = min(p.backoff, c.MaxBackoff)
	p.mu.Unlock()
}

func (p *passive) success() bool {
	if !p.dirty.Load() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	wasDown := p.state == down
	p.state, p.fails, p.backoff = healthy, 0, p.cfg.Backoff
	p.downUntil.Store(0)
	p.dirty.Store(false)
	return wasDown
}

func (p *passive) failure(now int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirty.Store(true)
	switch p.state {
	case healthy, suspect:
		p.fails++
		if p.fails < p.cfg.Failures {
			p.state = suspect
			return false
		}
	case down:
		if now < p.downUntil.Load() {
			// An attempt that started before the member went down: already accounted for.
			return false
		}
		p.fails++ // probation failed
	}
	p.state = down
	p.downUntil.Store(now + int64(p.backoff))
	p.backoff = min(2*p.backoff, p.cfg.MaxBackoff)
	return true
}

func (p *passive) snapshot() Health {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Health{DownUntil: p.downUntil.Load(), Fails: p.fails, Backoff: int64(p.backoff)}
}
