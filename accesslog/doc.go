// Package accesslog writes one line per proxied request and one per closed tunnel, in text
// (logfmt) or JSON, without allocating and without ever blocking the loop that logs.
//
// Each event loop owns a *Writer: it fills a plain Request or Tunnel value and calls
// Writer.Request or Writer.Tunnel, which copies the fields as one compact record into the
// writer's ring (a single-producer, single-consumer byte ring): numbers as numbers, text as it
// came, no formatting on the loop. One goroutine per Log drains every ring, formats a whole
// batch of records into lines at once and writes them to the destination. When a ring has no room (the destination is
// slow or stuck) the line is dropped and counted (Log.Dropped, exported as
// wsgate_access_log_dropped_total); the loop never waits. A file destination can be reopened
// (Log.Reopen, on SIGUSR1 for logrotate) without losing a line that was accepted.
//
// NewHandler builds the slog.Handler for wsgate's own log in the same format.
package accesslog
