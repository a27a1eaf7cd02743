package handoff

import (
	"context"
	"time"
)

// Options bound every step of a hand-off. The zero value means the defaults.
type Options struct {
	// ReadyTimeout: successor started -> its READY (it binds its listeners
	// in between). Default 30s.
	ReadyTimeout time.Duration
	// AckTimeout: a batch written -> its ACK (sender), an ACK written -> the
	// COMMIT (receiver), and any single frame write. Default 10s.
	AckTimeout time.Duration
	// IdleTimeout: receiver waiting for the next frame while nothing of
	// its own is pending (READY -> first batch, batch -> batch). Default 60s.
	IdleTimeout time.Duration
	// FinishTimeout: DONE -> BYE, and how long Abort waits for a cancelled
	// successor to exit before killing it. Default 10s.
	FinishTimeout time.Duration
	// Window: batches written and not yet acknowledged, at most. Default 2.
	Window int
	// MaxBatchFDs: descriptors per batch, 1..253 (SCM_MAX_FD). Default 253.
	MaxBatchFDs int
}

// Defaults for Options.
const (
	DefaultReadyTimeout  = 30 * time.Second
	DefaultAckTimeout    = 10 * time.Second
	DefaultIdleTimeout   = 60 * time.Second
	DefaultFinishTimeout = 10 * time.Second
	DefaultWindow        = 2
)

func (o Options) withDefaults() Options {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.FinishTimeout <= 0 {
		o.FinishTimeout = DefaultFinishTimeout
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MaxBatchFDs <= 0 || o.MaxBatchFDs > MaxBatchFDs {
		o.MaxBatchFDs = MaxBatchFDs
	}
	return o
}

// deadline is now+d, or ctx's deadline when that comes first.
func deadline(ctx context.Context, d time.Duration) time.Time {
	t := time.Now().Add(d)
	if cd, ok := ctx.Deadline(); ok && cd.Before(t) {
		return cd
	}
	return t
}

// ctxErr is ctx.Err(), also when ctx's deadline has passed but its timer
// has not fired yet (a read with that deadline can return first).
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}
