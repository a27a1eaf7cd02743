package httpparse

// An authority (RFC 3986 section 3.2) without userinfo, as a Host value or
// the authority of an absolute-form target carries it:
//
//	host [ ":" port ]   host = reg-name / "[" IPv6 "]"   port = *DIGIT
//
// It is followed one byte at a time, so that a target arriving in pieces is
// refused at its first impossible byte ("@" of userinfo, "#", a second ":"
// outside brackets, a letter in the port) rather than when the line ends.
// IPv6 literals are checked for their alphabet only (hex digits, ":" and
// "." for an embedded IPv4); IPvFuture and zone identifiers are refused.

// Authority states.
const (
	aStart   uint8 = iota // nothing yet
	aReg                  // in a reg-name (or IPv4 address)
	aPct1                 // after "%"
	aPct2                 // after "%" HEXDIG
	aV6First              // after "["
	aV6                   // inside the brackets
	aV6End                // after "]"
	aPort                 // after the ":" before the port
	aBad                  // refused
)

// authStep advances the authority state over c.
func authStep(st uint8, c byte) uint8 {
	switch st {
	case aStart, aReg:
		switch {
		case isRegName[c]:
			return aReg
		case c == '%':
			return aPct1
		case c == '[' && st == aStart:
			return aV6First
		case c == ':' && st == aReg:
			return aPort
		}
	case aPct1:
		if _, ok := unhex(c); ok {
			return aPct2
		}
	case aPct2:
		if _, ok := unhex(c); ok {
			return aReg
		}
	case aV6First, aV6:
		if _, ok := unhex(c); ok || c == ':' || c == '.' {
			return aV6
		}
		if c == ']' && st == aV6 {
			return aV6End
		}
	case aV6End:
		if c == ':' {
			return aPort
		}
	case aPort:
		if c >= '0' && c <= '9' {
			return aPort
		}
	}
	return aBad
}

// authComplete reports whether an authority may end in state st. An empty
// authority (aStart) is not complete: callers that allow it (an empty Host
// value) say so themselves.
func authComplete(st uint8) bool {
	return st == aReg || st == aV6End || st == aPort
}

// validHost reports whether v is an acceptable Host value: empty, or an
// authority as above.
func validHost(v []byte) bool {
	i := 0
	for i < len(v) && isRegName[v[i]] {
		i++
	}
	if i == len(v) {
		return true // the common case: a plain name, or empty
	}
	st := aStart
	if i > 0 {
		st = aReg
	}
	for ; i < len(v); i++ {
		if st = authStep(st, v[i]); st == aBad {
			return false
		}
	}
	return authComplete(st)
}
