package httpparse

// The request-target (RFC 9112 section 3.2) is followed one byte at a time,
// for the same reason as the rest of the head: a target that can no longer
// become valid is refused at its first impossible byte. Accepted forms:
//
//	origin-form    "/" path [ "?" query ]
//	asterisk-form  "*" (OPTIONS only; checked with the method once the line is complete)
//	absolute-form  ( "http" / "https" ) "://" authority [ ( "/" / "?" ) rest ]
//
// Only the http and https schemes are HTTP's own (RFC 9110 section 4.2); an
// absolute-form target with an empty authority is invalid for them (section
// 4.2.1), and userinfo is deprecated and refused, as is anything else that
// is not a host and an optional port. CONNECT's authority-form is refused
// earlier, on the method.

// Target states.
const (
	tsStart  uint8 = iota // first byte
	tsPath                // origin-form, or what follows an absolute-form authority: not looked at again
	tsStar                // asterisk-form
	tsScheme              // absolute-form: in the scheme
	tsSlash1              // after "scheme:"
	tsSlash2              // after "scheme:/"
	tsAuth                // in the authority
)

// targetScan follows one request-target. Offsets are indexes into the
// buffer being parsed.
type targetScan struct {
	st    uint8
	auth  uint8 // authority state while st == tsAuth
	n     uint8 // scheme bytes so far
	authS int32 // first byte of the authority
	authE int32 // just after the authority; 0 when the target has none
	path  int32 // first byte of the path-and-query (origin-form: the target's first byte)
}

// step looks at target byte c at offset i. The caller has checked that c is
// visible ASCII; SP ends the target and goes to end instead.
func (t *targetScan) step(c byte, i int) errKind {
	switch t.st {
	case tsPath:
	case tsStart:
		switch {
		case c == '/':
			t.st, t.path = tsPath, int32(i)
		case c == '*':
			t.st, t.path = tsStar, int32(i)
		case c|0x20 == 'h':
			t.st, t.n = tsScheme, 1
		default:
			return kBadTargetForm
		}
	case tsStar:
		return kBadTargetForm
	case tsScheme:
		// c|0x20 matches a letter only: no other byte ORs to 'h', 't', 'p' or 's'.
		switch {
		case c == ':' && t.n >= 4: // "http" or "https"
			t.st = tsSlash1
		case t.n < 4 && c|0x20 == "http"[t.n], t.n == 4 && c|0x20 == 's':
			t.n++
		default:
			return kBadTargetForm
		}
	case tsSlash1:
		if c != '/' {
			return kBadTargetForm
		}
		t.st = tsSlash2
	case tsSlash2:
		if c != '/' {
			return kBadTargetForm
		}
		t.st, t.auth, t.authS = tsAuth, aStart, int32(i+1)
	case tsAuth:
		if c == '/' || c == '?' {
			return t.endAuthority(i)
		}
		if t.auth = authStep(t.auth, c); t.auth == aBad {
			return kBadAuthority
		}
	}
	return 0
}

func (t *targetScan) endAuthority(i int) errKind {
	if !authComplete(t.auth) {
		return kBadAuthority
	}
	t.st, t.authE, t.path = tsPath, int32(i), int32(i)
	return 0
}

// end runs at offset i, the SP after the target.
func (t *targetScan) end(i int) errKind {
	switch t.st {
	case tsPath, tsStar:
		return 0
	case tsAuth:
		return t.endAuthority(i)
	}
	return kBadTargetForm
}

// feed steps over b[from:to], for a target that arrived whole. Past the
// authority nothing is checked but the byte class, which the caller did.
func (t *targetScan) feed(b []byte, from, to int) errKind {
	for i := from; i < to && t.st != tsPath; i++ {
		if k := t.step(b[i], i); k != 0 {
			return k
		}
	}
	return 0
}
