package splice

// Control of a running plane from outside its loops (docs/lifecycle.md): a drain closes the
// tunnels left at the end of its window a few at a time, so that their clients do not all
// reconnect in the same second.
//
// Invariant: a conn is only ever touched by its own loop. A command is queued like a new conn
// (loop.do) and runs on the loop's goroutine when it wakes, after the conns queued before it
// attached; the caller waits for its answer on a channel. Commands queued before the loop stops
// still run (against an empty loop), so no caller waits forever.

// drainedError ends a tunnel a drain closed. It matches ErrClosed (errors.Is), so a close
// reason derived from the error counts it as a drain, like the tunnels Close ends.
type drainedError struct{}

func (drainedError) Error() string        { return "splice: closed by a drain" }
func (drainedError) Is(target error) bool { return target == ErrClosed }

// ErrDrained is the TunnelResult.Err of a tunnel closed by CloseTunnels.
var ErrDrained error = drainedError{}

// do queues f to run on the loop. It reports false, and f never runs, when the loop is stopping.
func (l *loop) do(f func()) bool {
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		return false
	}
	wake := len(l.queue) == 0 && len(l.cmds) == 0
	l.cmds = append(l.cmds, f)
	l.mu.Unlock()
	if wake {
		l.poll.wake()
	}
	return true
}

// CloseTunnels closes up to n open tunnels, as evenly over the loops as their counts allow,
// with ErrDrained (their OnClose runs as for any close), and returns how many it closed. Bodies
// in transfer are not touched: they are HTTP exchanges, which end on their own. It waits until
// the loops have done it.
func (p *Plane) CloseTunnels(n int) int {
	closed := 0
	// Two passes: counts read from the loops' atomics may be stale by the time a loop runs
	// its command; the second pass gives what one loop could not close to the others.
	for pass := 0; pass < 2 && closed < n; pass++ {
		want := n - closed
		counts := make([]int64, len(p.loops))
		var total int64
		for i, l := range p.loops {
			counts[i] = max(l.st.tunnels.Load(), 0)
			total += counts[i]
		}
		if total == 0 {
			break
		}
		results := make(chan int, len(p.loops))
		asked := 0
		left := want
		for i, l := range p.loops {
			if counts[i] == 0 || left == 0 {
				continue
			}
			// This loop's share of want, rounded up, never more than it holds or is left.
			q := int(min((int64(want)*counts[i]+total-1)/total, counts[i], int64(left)))
			if q <= 0 {
				continue
			}
			left -= q
			l := l
			if l.do(func() { results <- l.closeTunnels(q) }) {
				asked++
			}
		}
		for ; asked > 0; asked-- {
			closed += <-results
		}
	}
	return closed
}

// closeTunnels closes up to n of this loop's tunnels with ErrDrained (on the loop).
func (l *loop) closeTunnels(n int) int {
	done := 0
	for i := len(l.slots) - 1; i >= 0 && done < n; i-- {
		c := l.slots[i]
		if c == nil || c.closed || c.x != nil || c.hs != nil {
			continue // an upgrade still deciding becomes a tunnel first
		}
		l.finish(c, ErrDrained)
		done++
	}
	return done
}
