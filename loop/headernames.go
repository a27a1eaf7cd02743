package loop

import (
	"fmt"
	"strconv"

	"github.com/wsgate/wsgate/httpparse"
)

// HeaderNamePolicy says what happens to a request field whose name holds a byte other than ASCII
// letters, digits and "-" (X_Forwarded_For, X.Real.IP). Such names are legal tokens, but CGI and
// WSGI stacks fold "_" (and often other punctuation) into "-", so X_Forwarded_For: 1.2.3.4 would
// reach the application as X-Forwarded-For and spoof the client address we set.
type HeaderNamePolicy uint8

const (
	HeaderNamesDrop   HeaderNamePolicy = iota // the zero value and default: such fields are not forwarded
	HeaderNamesReject                         // the request is answered 400 naming the problem, nothing is forwarded
)

// String returns the -header-names spelling: "drop" or "reject".
func (p HeaderNamePolicy) String() string {
	switch p {
	case HeaderNamesDrop:
		return "drop"
	case HeaderNamesReject:
		return "reject"
	}
	return "HeaderNamePolicy(" + strconv.Itoa(int(p)) + ")"
}

// UnmarshalText accepts "drop" or "reject" (flags and config files).
func (p *HeaderNamePolicy) UnmarshalText(b []byte) error {
	switch string(b) {
	case "drop":
		*p = HeaderNamesDrop
	case "reject":
		*p = HeaderNamesReject
	default:
		return fmt.Errorf("header name policy %q: want drop or reject", b)
	}
	return nil
}

// MarshalText is String as bytes.
func (p HeaderNamePolicy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// errOddFieldName answers a request with a field name outside [A-Za-z0-9-] under
// HeaderNamesReject; preallocated like httpparse's errors, so rejectResponse caches its answer.
var errOddFieldName = &httpparse.Error{Status: 400,
	Reason: "field name with a character other than A-Z a-z 0-9 and \"-\" (such as \"_\"; refused by -header-names=reject)"}

// checkFieldNames applies the HeaderNames policy to a parsed request: under HeaderNamesReject a
// request with a field name outside [A-Za-z0-9-] is refused; under HeaderNamesDrop such fields are
// left out by appendRequestHead. Free when the request has none (httpparse counted them).
func checkFieldNames(req *httpparse.Request, p HeaderNamePolicy) error {
	if req.OddNames > 0 && p == HeaderNamesReject {
		return errOddFieldName
	}
	return nil
}
