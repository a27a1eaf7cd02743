package tlsrecord

import (
	"errors"
	"strconv"
)

// Record layer limits (RFC 8446 section 5.1, 5.2).
const (
	HeaderLen     = 5                  // type(1) legacy_record_version(2) length(2)
	MaxPlaintext  = 1 << 14            // TLSPlaintext.fragment / TLSInnerPlaintext content
	MaxCiphertext = MaxPlaintext + 256 // TLSCiphertext.encrypted_record
	MaxRecord     = HeaderLen + MaxCiphertext
	minCiphertext = 1 + tagLen             // the inner content type byte and the tag
	Overhead      = HeaderLen + 1 + tagLen // a sealed record's bytes beyond its content, without padding
)

// ContentType is a record's (outer or inner) content type.
type ContentType uint8

const (
	ChangeCipherSpec ContentType = 20
	TypeAlert        ContentType = 21
	Handshake        ContentType = 22
	ApplicationData  ContentType = 23
)

func (t ContentType) String() string {
	switch t {
	case ChangeCipherSpec:
		return "change_cipher_spec"
	case TypeAlert:
		return "alert"
	case Handshake:
		return "handshake"
	case ApplicationData:
		return "application_data"
	}
	return "content type " + strconv.Itoa(int(t))
}

// Alert is an AlertDescription (RFC 8446 section 6).
type Alert uint8

const (
	AlertCloseNotify        Alert = 0
	AlertUnexpectedMessage  Alert = 10
	AlertBadRecordMAC       Alert = 20
	AlertRecordOverflow     Alert = 22
	AlertHandshakeFailure   Alert = 40
	AlertIllegalParameter   Alert = 47
	AlertDecodeError        Alert = 50
	AlertProtocolVersion    Alert = 70
	AlertInternalError      Alert = 80
	AlertUserCanceled       Alert = 90
	AlertNoApplicationProto Alert = 120
)

var alertNames = map[Alert]string{
	AlertCloseNotify: "close_notify", AlertUnexpectedMessage: "unexpected_message",
	AlertBadRecordMAC: "bad_record_mac", AlertRecordOverflow: "record_overflow",
	AlertHandshakeFailure: "handshake_failure", AlertIllegalParameter: "illegal_parameter",
	AlertDecodeError: "decode_error", AlertProtocolVersion: "protocol_version",
	AlertInternalError: "internal_error", AlertUserCanceled: "user_canceled",
	AlertNoApplicationProto: "no_application_protocol",
	42:                      "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
	45: "certificate_expired", 46: "certificate_unknown", 48: "unknown_ca",
	49: "access_denied", 51: "decrypt_error", 71: "insufficient_security",
	86: "inappropriate_fallback", 109: "missing_extension", 110: "unsupported_extension",
	112: "unrecognized_name", 113: "bad_certificate_status_response",
	115: "unknown_psk_identity", 116: "certificate_required",
}

func (a Alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return "alert " + strconv.Itoa(int(a))
}

// Error is a record-layer failure together with the alert the connection
// must send before it closes (RFC 8446 section 6.2: every error is fatal).
type Error struct {
	Alert Alert // what to send; AlertCloseNotify never appears here
	Msg   string
}

func (e *Error) Error() string { return "tls: " + e.Msg + " (" + e.Alert.String() + ")" }

// PeerAlertError is a fatal alert received from the peer: nothing is sent
// back, the connection just closes.
type PeerAlertError struct {
	Alert Alert
}

func (e *PeerAlertError) Error() string { return "tls: peer sent alert " + e.Alert.String() }

// AlertFor returns the alert to send for err before closing, and false when
// none should be sent (the peer's own fatal alert, or a nil error).
func AlertFor(err error) (Alert, bool) {
	if err == nil {
		return 0, false
	}
	var pe *PeerAlertError
	if errors.As(err, &pe) {
		return 0, false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Alert, true
	}
	return AlertInternalError, true
}

// The errors Open can return. All are *Error carrying the alert to send.
var (
	ErrBadRecordType    = &Error{AlertUnexpectedMessage, "record type is not application_data"}
	ErrBadRecordVersion = &Error{AlertDecodeError, "record version is not 0x0303"}
	ErrRecordOverflow   = &Error{AlertRecordOverflow, "record longer than 2^14+256"}
	ErrShortRecord      = &Error{AlertDecodeError, "record shorter than an AEAD tag and a content type"}
	ErrBadRecordMAC     = &Error{AlertBadRecordMAC, "record authentication failed"}
	ErrInnerOverflow    = &Error{AlertRecordOverflow, "decrypted record longer than 2^14+1"}
	ErrNoContentType    = &Error{AlertUnexpectedMessage, "decrypted record is all zeros (no content type)"}
	ErrSeqExhausted     = &Error{AlertInternalError, "sequence number exhausted"}
)

// ParseHeader validates the 5-byte header of a protected TLS 1.3 record
// (outer type application_data, legacy version 0x0303, 17 <= length <=
// 2^14+256) and returns the length of the encrypted_record that follows.
// b must hold at least HeaderLen bytes.
func ParseHeader(b []byte) (int, error) {
	_ = b[HeaderLen-1]
	if ContentType(b[0]) != ApplicationData {
		return 0, ErrBadRecordType
	}
	if b[1] != 3 || b[2] != 3 {
		return 0, ErrBadRecordVersion
	}
	n := int(b[3])<<8 | int(b[4])
	if n > MaxCiphertext {
		return 0, ErrRecordOverflow
	}
	if n < minCiphertext {
		return 0, ErrShortRecord
	}
	return n, nil
}

// RecordLen returns the total length (header included) of the record that
// starts b, or 0 if b holds fewer than HeaderLen bytes. It validates the
// header, so a loop can reject garbage before buffering it.
func RecordLen(b []byte) (int, error) {
	if len(b) < HeaderLen {
		return 0, nil
	}
	n, err := ParseHeader(b)
	if err != nil {
		return 0, err
	}
	return HeaderLen + n, nil
}
