package accesslog_test

import (
	"net/netip"
	"os"
	"time"

	"github.com/wsgate/wsgate/accesslog"
)

// One loop's writer logging a relayed request, a request wsgate answered itself and a closed
// tunnel, in both formats. (Lines reach the destination from the Log's goroutine; Close
// flushes.)
func Example() {
	at := time.Date(2026, 11, 3, 10, 0, 0, 123456789, time.UTC)
	client := netip.MustParseAddrPort("192.0.2.7:51234")
	for _, f := range []accesslog.Format{accesslog.Text, accesslog.JSON} {
		l := accesslog.New(os.Stdout, accesslog.Config{Format: f})
		w := l.NewWriter() // one per event loop
		w.Request(&accesslog.Request{Time: at, Client: client, Method: []byte("GET"),
			Target: []byte(`/loki/api/v1/query?query={job="x"}`), Status: 200, BytesIn: 312, BytesOut: 4096,
			Duration: 812 * time.Microsecond, Route: "/loki/", Backend: "127.0.0.1:3100", Connect: 101 * time.Microsecond})
		w.Request(&accesslog.Request{Time: at, Client: client, Method: []byte("GET"), Target: []byte("/a\\b\xff"),
			Status: 400, BytesIn: 38, BytesOut: 97, Route: "none", Answered: accesslog.ParseError,
			Detail: "invalid character in request-target"})
		w.Tunnel(&accesslog.Tunnel{Time: at, Client: client, Target: []byte("/api/live/ws"), Route: "/",
			Backend: "127.0.0.1:3000", Duration: time.Hour + 5*time.Millisecond, BytesUp: 1234, BytesDown: 987654321,
			Reason: "backend"})
		l.Close()
	}
	// Output:
	// time=2026-11-03T10:00:00.123Z msg=request client=192.0.2.7:51234 method=GET target="/loki/api/v1/query?query={job=\"x\"}" status=200 bytes_in=312 bytes_out=4096 duration=0.000812 route=/loki/ backend=127.0.0.1:3100 connect=0.000101
	// time=2026-11-03T10:00:00.123Z msg=request client=192.0.2.7:51234 method=GET target="/a\\b\xff" status=400 bytes_in=38 bytes_out=97 duration=0.000000 route=none backend="" connect=0.000000 answered=parse_error detail="invalid character in request-target"
	// time=2026-11-03T10:00:00.123Z msg=tunnel client=192.0.2.7:51234 target=/api/live/ws route=/ backend=127.0.0.1:3000 duration=3600.005000 bytes_up=1234 bytes_down=987654321 reason=backend
	// {"time":"2026-11-03T10:00:00.123Z","msg":"request","client":"192.0.2.7:51234","method":"GET","target":"/loki/api/v1/query?query={job=\"x\"}","status":200,"bytes_in":312,"bytes_out":4096,"duration":0.000812,"route":"/loki/","backend":"127.0.0.1:3100","connect":0.000101}
	// {"time":"2026-11-03T10:00:00.123Z","msg":"request","client":"192.0.2.7:51234","method":"GET","target":"/a\\\\b\\xff","status":400,"bytes_in":38,"bytes_out":97,"duration":0.000000,"route":"none","backend":"","connect":0.000000,"answered":"parse_error","detail":"invalid character in request-target"}
	// {"time":"2026-11-03T10:00:00.123Z","msg":"tunnel","client":"192.0.2.7:51234","target":"/api/live/ws","route":"/","backend":"127.0.0.1:3000","duration":3600.005000,"bytes_up":1234,"bytes_down":987654321,"reason":"backend"}
}
