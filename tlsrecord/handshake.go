package tlsrecord

// Post-handshake handshake messages (RFC 8446 section 4.6), parsed only as
// far as a record layer needs: KeyUpdate (to honour it) and NewSessionTicket
// (to recognise it: a server never receives one, a client may skip it).

// Handshake message types this package recognises.
const (
	TypeNewSessionTicket uint8 = 4
	TypeFinished         uint8 = 20
	TypeKeyUpdate        uint8 = 24
)

const handshakeHeaderLen = 4 // msg_type(1) length(3)

var (
	errHandshakeFragment = &Error{AlertUnexpectedMessage, "post-handshake message split across records"}
	errKeyUpdateLen      = &Error{AlertDecodeError, "KeyUpdate body is not one byte"}
	errKeyUpdateValue    = &Error{AlertIllegalParameter, "KeyUpdate request_update is not 0 or 1"}
	errKeyUpdateAlign    = &Error{AlertUnexpectedMessage, "KeyUpdate not at the end of its record"}
	errAlertLen          = &Error{AlertDecodeError, "alert record is not two bytes"}
	errEmptyHandshake    = &Error{AlertUnexpectedMessage, "empty handshake record"}
)

// NextHandshake splits the first handshake message off b (the content of a
// decrypted handshake record): its type, its body and what follows it. A
// message that does not end inside b is reported as an error: post-handshake
// messages a server can receive (KeyUpdate: 5 bytes) are never fragmented in
// practice, and the record layer keeps no buffer for reassembly.
func NextHandshake(b []byte) (typ uint8, body, rest []byte, err error) {
	if len(b) < handshakeHeaderLen {
		return 0, nil, nil, errHandshakeFragment
	}
	n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if len(b)-handshakeHeaderLen < n {
		return 0, nil, nil, errHandshakeFragment
	}
	end := handshakeHeaderLen + n
	return b[0], b[handshakeHeaderLen:end], b[end:], nil
}

// ParseKeyUpdate returns the request_update field of a KeyUpdate body:
// true for update_requested.
func ParseKeyUpdate(body []byte) (requested bool, err error) {
	if len(body) != 1 {
		return false, errKeyUpdateLen
	}
	switch body[0] {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, errKeyUpdateValue
}

// keyUpdateMsg is a complete KeyUpdate handshake message.
func keyUpdateMsg(requested bool) [5]byte {
	m := [5]byte{TypeKeyUpdate, 0, 0, 1, 0}
	if requested {
		m[4] = 1
	}
	return m
}
