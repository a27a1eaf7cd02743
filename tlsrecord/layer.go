package tlsrecord

// RecordLayer is record protection for one established connection, as an event loop or the
// tunnel plane drives it: *Session (TLS 1.3) implements it, and tlsterm adapts a TLS 1.2
// connection (Legacy.Layer) so that the loop and the plane have one code path for both.
//
// Open's contract is Session.Open's, with one generalisation for callers that serve both: keep
// calling Open with in[n:] while it returns n > 0, plaintext or an event; a call that returns
// none of the three ends the batch (and returns any borrowed buffer).
type RecordLayer interface {
	Open(in []byte) (n int, plain []byte, ev Event, err error)
	Seal(dst, p []byte) ([]byte, error)
	Flush(dst []byte) ([]byte, error)
	AppendCloseNotify(dst []byte) ([]byte, error)
	AppendAlert(dst []byte, a Alert) ([]byte, error)
	KeyUpdatePending() bool
	Partial() bool
	Shrink()
	Close()
}

var _ RecordLayer = (*Session)(nil)
