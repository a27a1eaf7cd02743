package loop

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// warnLimiter lets a backend failure reach the operator's log at the default level without a
// dead backend turning every request into a log line: at most one line per interval, and that
// line says how many similar failures it stands for.
type warnLimiter struct {
	interval   time.Duration
	last       atomic.Int64 // nanotime of the last line written, 0 = none yet
	suppressed atomic.Int64
}

// warn writes msg at Warn level unless another line went out less than interval ago. now is
// nanotime (monotonic, near 0 at start: hence last == 0 means "no line yet"), passed in so
// callers on the event loop can reuse the clock they already read.
func (l *warnLimiter) warn(log *slog.Logger, now int64, msg string, args ...any) {
	last := l.last.Load()
	if (last != 0 && now-last < int64(l.interval)) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "similar_suppressed", n)
	}
	log.Warn(msg, args...)
}
