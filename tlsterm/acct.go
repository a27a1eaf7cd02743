package tlsterm

import (
	"errors"
	"fmt"

	"github.com/wsgate/wsgate/tlsrecord"
)

// outAcct watches the records crypto/tls writes during a TLS 1.3 handshake
// to establish the server's write sequence number under the application key
// rather than assume it: it decrypts (copies of) our own records with the
// server handshake key until it has seen the server Finished, then requires
// every later record to open under the server application key at sequence
// 0, 1, 2, ... (Go sends its NewSessionTicket there, in the same flight).
// After the handshake the Session seals from sequence appRecords.
//
// It runs on the handshake goroutine (pipe.Write), where crypto/tls also
// calls the KeyLogWriter, so the secrets are there before the records they
// protect are written.
type outAcct struct {
	sec        *secrets
	suite      uint16 // from the ServerHello; 0 until seen, or a TLS 1.2 suite
	phase      uint8
	hs, app    tlsrecord.State
	msgLeft    int    // bytes of a handshake message continuing in the next record
	carry      []byte // a record split across Write calls (crypto/tls does not, but be safe)
	scratch    []byte
	appRecords int // records sealed under the server application key
	err        error
}

const (
	phaseHandshakeKey = iota // records are under the server handshake key
	phaseAppKey              // the server Finished has been sent
)

func (a *outAcct) scan(b []byte) {
	if a.err != nil {
		return
	}
	if len(a.carry) > 0 {
		a.carry = append(a.carry, b...)
		b = a.carry
	}
	for {
		n := recordLen(b)
		if n == 0 {
			break
		}
		a.record(b[:n])
		b = b[n:]
	}
	a.carry = append(a.carry[:0], b...)
}

func (a *outAcct) fail(format string, args ...any) {
	if a.err == nil {
		a.err = fmt.Errorf("establishing the write sequence: "+format, args...)
	}
}

func (a *outAcct) record(rec []byte) {
	switch tlsrecord.ContentType(rec[0]) {
	case tlsrecord.Handshake:
		// Plaintext: the ServerHello (or HelloRetryRequest) names the suite.
		if len(rec) >= 5+4+2+32+1 && rec[5] == 2 {
			body := rec[9:]
			sid := int(body[34])
			if len(body) >= 35+sid+2 {
				a.suite = uint16(body[35+sid])<<8 | uint16(body[36+sid])
			}
		}
		return
	case tlsrecord.ApplicationData:
	default:
		return // change_cipher_spec, a plaintext alert
	}
	if tlsrecord.SuiteName(a.suite) == "" {
		a.fail("encrypted record before a TLS 1.3 ServerHello")
		return
	}
	a.scratch = append(a.scratch[:0], rec...)
	switch a.phase {
	case phaseHandshakeKey:
		if a.hs.Suite() == 0 {
			if a.sec.serverHS == nil {
				a.fail("no server handshake secret from the key log")
				return
			}
			if err := a.hs.Init(a.suite, a.sec.serverHS); err != nil {
				a.fail("%v", err)
				return
			}
		}
		typ, content, _, err := a.hs.Open(a.scratch)
		if err != nil || typ != tlsrecord.Handshake {
			a.fail("our record %d under the handshake key does not open (%v, %v)", a.hs.Seq()-1, typ, err)
			return
		}
		a.walk(content)
	case phaseAppKey:
		if a.app.Suite() == 0 {
			if a.sec.serverApp == nil {
				a.fail("no server application secret from the key log")
				return
			}
			if err := a.app.Init(a.suite, a.sec.serverApp); err != nil {
				a.fail("%v", err)
				return
			}
		}
		if _, _, _, err := a.app.Open(a.scratch); err != nil {
			a.fail("our record after Finished does not open under the application key at sequence %d: %v", a.appRecords, err)
			return
		}
		a.appRecords++
	}
	clear(a.scratch)
}

// walk follows handshake message boundaries across records until the
// server Finished, which must end its record (a key change follows it).
func (a *outAcct) walk(b []byte) {
	for len(b) > 0 {
		if a.msgLeft > 0 {
			k := min(a.msgLeft, len(b))
			a.msgLeft -= k
			b = b[k:]
			continue
		}
		if len(b) < 4 {
			a.fail("handshake message header split across records")
			return
		}
		typ := b[0]
		n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		b = b[4:]
		if typ == tlsrecord.TypeFinished {
			if len(b) != n {
				a.fail("server Finished does not end its record")
				return
			}
			a.phase = phaseAppKey
			return
		}
		a.msgLeft = n
	}
}

// result is the established write sequence.
func (a *outAcct) result() (uint64, error) {
	if a.err != nil {
		return 0, a.err
	}
	if a.phase != phaseAppKey {
		return 0, errors.New("establishing the write sequence: the server Finished was not seen")
	}
	if len(a.carry) > 0 {
		return 0, errors.New("establishing the write sequence: a partial record was written")
	}
	return uint64(a.appRecords), nil
}

func (a *outAcct) wipe() {
	a.hs.Wipe()
	a.app.Wipe()
	clear(a.scratch)
}
