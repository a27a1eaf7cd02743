package splice

import "errors"

var errFramerStalled = errors.New("framer consumed no bytes")

// The timer wheel: wheelSize buckets of intrusive doubly linked lists, one
// tick per bucket. A conn sits in at most one bucket, at the earliest of its
// idle and fin deadlines. Activity does not touch the wheel: move only
// stores the current tick in c.active, and when the bucket comes round an
// idle conn that saw traffic is simply relinked further on (the lazy
// re-arm that keeps the data path free of list surgery).

// after reports a >= b on the wrapping tick counter.
func after(a, b uint32) bool { return int32(a-b) >= 0 }

func (l *loop) arm(c *conn) {
	var d uint32
	has := false
	switch {
	case c.hs != nil:
		// A pending upgrade (a refusal's relay included) has one deadline,
		// its phase's.
		d, has = c.hs.deadline, true
	case c.x != nil:
		d, has = c.x.next(c, l.lastTick)
	default:
		if c.idle > 0 {
			d, has = c.active+c.idle+1, true
		}
		if c.finAt != 0 && (!has || after(d, c.finAt)) {
			d, has = c.finAt, true
		}
	}
	if c.t != nil && c.hs == nil {
		if t, ok := l.tlsDeadline(c); ok && (!has || after(d, t)) {
			d, has = t, true
		}
	}
	if !has || c.closed {
		l.disarm(c)
		return
	}
	if after(l.lastTick, d) {
		d = l.lastTick + 1
	}
	if c.tb >= 0 && c.deadline == d {
		return
	}
	l.disarm(c)
	c.deadline = d
	b := int16(d % wheelSize)
	c.tb = b
	c.tprev = -1
	c.tnext = l.wheel[b]
	if c.tnext >= 0 {
		l.slots[c.tnext].tprev = c.slot
	}
	l.wheel[b] = c.slot
	l.armed++
}

// The wheel's lists link conns by slot: only attached conns (which have one) are ever armed, and
// a conn leaves the wheel (disarm) before its slot is freed.
func (l *loop) disarm(c *conn) {
	if c.tb < 0 {
		return
	}
	if c.tprev >= 0 {
		l.slots[c.tprev].tnext = c.tnext
	} else {
		l.wheel[c.tb] = c.tnext
	}
	if c.tnext >= 0 {
		l.slots[c.tnext].tprev = c.tprev
	}
	c.tnext, c.tprev, c.tb = -1, -1, -1
	l.armed--
}

// advance walks the buckets of every tick since the last call. Each bucket
// is detached before the walk so relinking into it cannot loop.
func (l *loop) advance() {
	now := l.now
	if l.armed == 0 {
		l.lastTick = now
		return
	}
	if int32(now-l.lastTick) > wheelSize {
		l.lastTick = now - wheelSize
	}
	for int32(now-l.lastTick) > 0 {
		l.lastTick++
		t := l.lastTick
		b := t % wheelSize
		i := l.wheel[b]
		l.wheel[b] = -1
		for i >= 0 {
			c := l.slots[i]
			i = c.tnext
			c.tnext, c.tprev, c.tb = -1, -1, -1
			l.armed--
			l.expire(c, t) // expiring c ends no other conn, so the next slot still holds its conn
		}
	}
}

func (l *loop) expire(c *conn, t uint32) {
	if c.closed {
		return
	}
	if c.hs != nil {
		if after(t, c.hs.deadline) {
			l.hsTimeout(c)
		} else {
			l.arm(c)
		}
		return
	}
	if c.t != nil && !l.tlsExpire(c, t) {
		return
	}
	if c.finAt != 0 && after(t, c.finAt) {
		l.finish(c, ErrFinTimeout)
		return
	}
	if x := c.x; x != nil {
		held := c.flows[0].holds()
		if held && c.idle != 0 && after(t, c.active+c.idle+1) {
			l.finish(c, &OpError{Dir: c.dir(0), Op: "write to dst: no progress", Err: ErrStallTimeout})
			return
		}
		if !held && x.quiet != 0 && after(t, c.active+x.quiet+1) {
			l.finish(c, &OpError{Dir: c.dir(0), Op: "read from src: nothing arrived", Err: ErrIdleTimeout})
			return
		}
	} else if c.idle != 0 && after(t, c.active+c.idle+1) {
		l.finish(c, ErrIdleTimeout)
		return
	}
	l.arm(c)
}

// next says when a transfer's timers must be looked at again: for each timer that is set, the
// tick at which it fires if the direction stays as it is (holding bytes for the stall timer,
// holding none for the source-idle timer). A timer whose tick has passed did not fire because
// the direction was in the other condition; it is looked at again a full period later. That never
// misses a deadline: the condition can only start holding with a fresh c.active (a read that
// fills, a write that drains), whose own deadline lies beyond the new look.
func (x *xfer) next(c *conn, now uint32) (uint32, bool) {
	var d uint32
	has := false
	for _, lim := range [2]uint32{c.idle, x.quiet} {
		if lim == 0 {
			continue
		}
		t := c.active + lim + 1
		if after(now, t) {
			t = now + lim + 1
		}
		if !has || after(d, t) {
			d, has = t, true
		}
	}
	return d, has
}
