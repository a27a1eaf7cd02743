// Package tlsterm terminates TLS for an event loop without a goroutine or a
// buffer per idle connection, with the standard library doing all of the
// cryptography.
//
// A connection goes through a small state machine driven by the loop
// (Handshake.Feed): its ClientHello is buffered and parsed in the loop (no
// goroutine for scanners and slow clients); then crypto/tls runs the
// handshake on a short-lived goroutine, at most Config.MaxHandshakes at once,
// over an in-memory conn that hands it one record at a time so it never reads
// past the client's Finished; the driver only returns bytes for the loop to
// write, it never touches the socket.
//
// A TLS 1.3 connection then leaves crypto/tls: its application traffic
// secrets come from Config.KeyLogWriter (matched to the connection by its
// ClientHello random), the server's write sequence number is established by
// opening the records crypto/tls wrote after its Finished (its
// NewSessionTicket), and the result is a tlsrecord.Session: keys and sequence
// numbers, no buffer. A TLS 1.2 connection stays on its crypto/tls.Conn
// (Legacy) over the same in-memory conn in non-blocking mode.
//
// CertStore chooses certificates by SNI and reloads them; the kTLS functions
// probe for and describe kernel TLS. See docs/tls.md for the design, the
// measurements and how loop/ and splice/ use this package.
package tlsterm

import "github.com/wsgate/wsgate/tlsrecord"

// Session is the record layer of an established TLS 1.3 connection.
type Session = tlsrecord.Session
