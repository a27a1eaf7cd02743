package splice

import "errors"

var (
	errUnexpectedEOF = errors.New("unexpected EOF before the end of the body")
	errFramerStalled = errors.New("framer consumed no bytes")
)

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
	if c.hs != nil {
		// A pending upgrade has one deadline, its phase's.
		d, has = c.hs.deadline, true
	} else if c.idle > 0 {
		d, has = c.active+c.idle+1, true
	}
	if c.hs == nil && c.finAt != 0 && (!has || after(d, c.finAt)) {
		d, has = c.finAt, true
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
	b := int32(d % wheelSize)
	c.tb = b
	c.tprev = nil
	c.tnext = l.wheel[b]
	if c.tnext != nil {
		c.tnext.tprev = c
	}
	l.wheel[b] = c
	l.armed++
}

func (l *loop) disarm(c *conn) {
	if c.tb < 0 {
		return
	}
	if c.tprev != nil {
		c.tprev.tnext = c.tnext
	} else {
		l.wheel[c.tb] = c.tnext
	}
	if c.tnext != nil {
		c.tnext.tprev = c.tprev
	}
	c.tnext, c.tprev, c.tb = nil, nil, -1
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
		c := l.wheel[b]
		l.wheel[b] = nil
		for c != nil {
			next := c.tnext
			c.tnext, c.tprev, c.tb = nil, nil, -1
			l.armed--
			l.expire(c, t)
			c = next
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
	if c.finAt != 0 && after(t, c.finAt) {
		l.finish(c, ErrFinTimeout)
		return
	}
	if c.idle != 0 && after(t, c.active+c.idle+1) {
		if c.x != nil {
			l.finish(c, &OpError{Dir: c.dir(0), Op: "no progress", Err: ErrIdleTimeout})
		} else {
			l.finish(c, ErrIdleTimeout)
		}
		return
	}
	l.arm(c)
}
