// Package tlsrecord is the TLS 1.3 record layer (RFC 8446 section 5) for a
// connection whose handshake happened elsewhere (crypto/tls): traffic keys
// derived from the traffic secrets, records sealed and opened in place with no
// allocation, sequence numbers, TLSInnerPlaintext padding, the 2^14 limits,
// KeyUpdate, close_notify and alerts.
//
// It exists so that an event loop (or the tunnel plane) can carry an
// established TLS 1.3 connection without a crypto/tls.Conn, which keeps
// 7.5-24 KB of buffers per idle connection. A Session holds two State values
// (keys, IV, sequence number, current traffic secret) and nothing else while
// idle: a record that arrives in pieces borrows a pooled buffer until it is
// complete.
//
// The cryptography is the standard library's (crypto/aes, crypto/cipher,
// crypto/hkdf) plus golang.org/x/crypto/chacha20poly1305, the Go team's own
// module that crypto/tls vendors. Nothing here negotiates anything: the
// handshake stays in crypto/tls.
//
// A State or Session is used by one goroutine at a time (an event loop); none
// of it is safe for concurrent use.
package tlsrecord
