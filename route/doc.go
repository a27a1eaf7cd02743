// Package route is wsgate's route table and backend pools: which backend pool serves a request
// (host + longest path prefix, zero-allocation Match), how a pool picks a member (least-conn,
// round-robin, client-hash), whether a member is healthy (passive back-off from dial results,
// optional active HTTP probes), and how a connection to a member is opened (source-address
// spreading with IP_BIND_ADDRESS_NO_PORT, for a goroutine dialer and for a non-blocking connect
// driven by an epoll loop).
//
// The package is a leaf: it imports only the standard library and golang.org/x/sys, so both the
// HTTP plane (loop) and the tunnel plane can use it. docs/routing.md has the rules, the figures
// and how loop/ and cmd/wsgate use it.
//
// Concurrency: a Table is immutable once built and may be read by every event loop at once.
// Members' counters and health states are atomics shared by the loops; the state changes that
// need a lock (a member going down or coming back) are rare.
package route
