package httpparse

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
)

// websocketGUID is the fixed suffix of RFC 6455 section 1.3.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptLen is len(base64(SHA-1 digest)).
const acceptLen = 28

// CheckWebSocketRequest validates a client opening handshake (RFC 6455
// section 4.2.1). It returns nil or an *Error: 426 when
// Sec-WebSocket-Version is absent or not 13 (answer with
// "Sec-WebSocket-Version: 13"), 400 for everything else.
func CheckWebSocketRequest(req *Request) error {
	if string(req.Method) != "GET" {
		return errWSMethod
	}
	if req.Minor != 1 {
		return errWSProto
	}
	// One pass over the fields, told apart by name length first: this runs
	// for every upgrade a busy edge accepts.
	var ver, key []byte
	nver, nkey := 0, 0
	upgrade, connection := false, false
	for i := range req.Headers {
		h := &req.Headers[i]
		switch len(h.Name) {
		case len("Upgrade"):
			if !upgrade && EqualFold(h.Name, "Upgrade") {
				upgrade = HasToken(h.Value, "websocket")
			}
		case len("Connection"):
			if !connection && EqualFold(h.Name, "Connection") {
				connection = HasToken(h.Value, "upgrade")
			}
		case len("Sec-WebSocket-Key"):
			if EqualFold(h.Name, "Sec-WebSocket-Key") {
				key = h.Value
				nkey++
			}
		case len("Sec-WebSocket-Version"):
			if EqualFold(h.Name, "Sec-WebSocket-Version") {
				ver = h.Value
				nver++
			}
		}
	}
	switch {
	case !upgrade:
		return errWSUpgrade
	case !connection:
		return errWSConnection
	case nver != 1 || string(ver) != "13":
		return errWSVersion
	case nkey != 1 || !validKey(key):
		return errWSKey
	}
	return nil
}

// validKey accepts exactly the canonical base64 of 16 bytes: 22 significant
// characters, "==" padding, and a last character whose 4 unused low bits
// are zero (one of "AQgw"), which is what a strict decoder demands too.
func validKey(key []byte) bool {
	if len(key) != 24 || key[22] != '=' || key[23] != '=' {
		return false
	}
	for _, c := range key[:21] {
		if !isBase64[c] {
			return false
		}
	}
	switch key[21] {
	case 'A', 'Q', 'g', 'w':
		return true
	}
	return false
}

var isBase64 = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t[c] = true
	}
	return t
}()

// AppendAccept appends base64(SHA-1(key + GUID)), the Sec-WebSocket-Accept
// value for key, to dst. It does not allocate when dst has 28 bytes spare
// and key is no longer than 64 bytes (real keys are 24).
func AppendAccept(dst, key []byte) []byte {
	var sum [sha1.Size]byte
	if len(key) <= 64 {
		var b [64 + len(websocketGUID)]byte
		n := copy(b[:], key)
		n += copy(b[n:], websocketGUID)
		sum = sha1.Sum(b[:n])
	} else {
		h := sha1.New()
		h.Write(key)
		h.Write([]byte(websocketGUID))
		h.Sum(sum[:0])
	}
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// VerifyAccept reports whether accept is the Sec-WebSocket-Accept value that
// answers key. It does not allocate.
func VerifyAccept(key, accept []byte) bool {
	if len(accept) != acceptLen {
		return false
	}
	var b [acceptLen]byte
	return bytes.Equal(AppendAccept(b[:0], key), accept)
}
