package loop

import "time"

// Housekeeping on each loop: flushing queues toward slow peers and enforcing timeouts. One ticker
// goroutine per server (server.go) Executes tick on the loops; there is no timer per request.
//
// Invariant: every deadline is a nanotime value checked by the sweep on the conn's own loop, and
// bytes queued toward a peer are only ever dropped by the write-stall rule (no progress for
// IdleTimeout), never by the idle, header or linger timers.

// clockBase anchors nanotime. time.Since reads the monotonic clock, so deadlines neither jump
// nor fire early when the wall clock is stepped (NTP, a VM resumed, an operator's date -s).
var clockBase = time.Now()

// nanotime is the clock for deadlines: monotonic nanoseconds since the process started, never 0
// (a zero deadline means "none").
func nanotime() int64 { return int64(time.Since(clockBase)) + 1 }

// now is nanotime for deadlines. Inside one OnTraffic callback it is read once: a callback lasts
// microseconds and deadlines are enforced by a 200 ms sweep, while reading the clock four times
// per proxied request cost about 2% of the proxy's CPU (vdso + TSC read).
func (ls *loopState) now() int64 {
	if !ls.inTraffic {
		return nanotime()
	}
	if ls.nowNs == 0 {
		ls.nowNs = nanotime()
	}
	return ls.nowNs
}

func (ls *loopState) enterTraffic() { ls.inTraffic, ls.nowNs = true, 0 }
func (ls *loopState) leaveTraffic() { ls.inTraffic, ls.nowNs = false, 0 }

// tick runs on the loop: flush queues toward slow peers, then (every sweepEvery) enforce timeouts.
func (ls *loopState) tick(sweep bool) {
	ls.flush()
	if sweep {
		ls.sweep(nanotime())
		ls.syncWall()
	}
}

// flush retries every queued exchange's queues.
func (ls *loopState) flush() {
	for cc := range ls.queued {
		if !cc.flushQueues() {
			delete(ls.queued, cc)
		}
	}
	ls.hasQueued.Store(len(ls.queued) > 0)
}

// sweep applies the write-stall rule to every queue, fires the deadlines that passed by now and
// closes pool entries idle too long or to members the route table no longer has.
func (ls *loopState) sweep(now int64) {
	stall := int64(ls.srv.cfg.IdleTimeout)
	for cc := range ls.clients {
		if cc.tls != nil && cc.tls.sweep(now) {
			continue // handshake timeout, a record half-received too long (tlswire.go)
		}
		if cc.state != stateOffloaded { // queues wait while their sockets are in the plane
			if cc.out.stalled(now, stall) {
				cc.writeStalled()
				continue
			}
			if bc := cc.ex.bc; bc != nil && bc.out.stalled(now, stall) {
				cc.backendStalled()
				continue
			}
		}
		if cc.deadline != 0 && now >= cc.deadline {
			cc.expire(now)
		}
	}
	idleLimit := now - int64(ls.srv.cfg.BackendIdleTimeout)
	table := ls.srv.routes.Load()
	for id := range ls.idle {
		pool := &ls.idle[id]
		for i := 0; i < len(*pool); {
			// Expired, or to a member the table in use no longer has (a reload dropped it).
			if bc := (*pool)[i]; bc.idleSince < idleLimit || !table.Has(bc.member) {
				ls.removeIdle(bc)
				bc.close()
				continue
			}
			i++
		}
	}
}
