package accesslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// parseLogfmt reads one text-format line: key=value pairs separated by one space, values bare
// or Go-quoted. It is strict: anything else is an error, so the tests also check the grammar.
func parseLogfmt(line string) (keys []string, vals map[string]string, err error) {
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		return nil, nil, fmt.Errorf("not one line: %q", line)
	}
	s := strings.TrimSuffix(line, "\n")
	vals = map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, nil, fmt.Errorf("no key at %q", s)
		}
		k := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for ; end < len(s) && s[end] != '"'; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			if end >= len(s) {
				return nil, nil, fmt.Errorf("unterminated quote in %q", s)
			}
			v, err = strconv.Unquote(s[:end+1])
			if err != nil {
				return nil, nil, fmt.Errorf("value %q: %v", s[:end+1], err)
			}
			s = s[end+1:]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			v = s[:sp]
			if v == "" || !bare(v) {
				return nil, nil, fmt.Errorf("bare value %q needs quoting", v)
			}
			s = s[sp:]
		}
		if _, dup := vals[k]; dup {
			return nil, nil, fmt.Errorf("duplicate key %s", k)
		}
		keys = append(keys, k)
		vals[k] = v
		if s != "" {
			if s[0] != ' ' {
				return nil, nil, fmt.Errorf("no space before %q", s)
			}
			s = s[1:]
		}
	}
	return keys, vals, nil
}

// unescapeValue inverts the JSON value escaping on a decoded string (\\ -> \, \xNN -> byte).
func unescapeValue(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '\\' {
			out = append(out, '\\')
			i++
			continue
		}
		if i+3 < len(s) && s[i+1] == 'x' {
			b, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				return nil, err
			}
			out = append(out, byte(b))
			i += 3
			continue
		}
		return nil, fmt.Errorf("lone backslash at %d in %q", i, s)
	}
	return out, nil
}

func format(f Format, r *Request, t *Tunnel) string {
	var l line
	var c clock
	if r != nil {
		l.request(f, &c, r)
	} else {
		l.tunnel(f, &c, t)
	}
	return string(l.b)
}

var (
	t0      = time.Date(2026, 11, 3, 10, 0, 0, 123456789, time.UTC)
	relayed = Request{
		Time:     t0,
		Client:   netip.MustParseAddrPort("192.0.2.7:51234"),
		Method:   []byte("GET"),
		Target:   []byte(`/loki/api/v1/query?query={job="x"}`),
		Status:   200,
		BytesIn:  312,
		BytesOut: 4096,
		Duration: 812345 * time.Nanosecond,
		Route:    "/loki/",
		Backend:  "127.0.0.1:3100",
		Connect:  101 * time.Microsecond,
	}
	answered = Request{
		Time:     t0.In(time.FixedZone("", 3600)),
		Client:   netip.MustParseAddrPort("[2001:db8::1]:443"),
		Method:   []byte("GET"),
		Target:   []byte("/nope"),
		Status:   404,
		BytesIn:  40,
		BytesOut: 120,
		Duration: 2 * time.Second,
		Route:    "none",
		Answered: NoRoute,
		Detail:   "no route for host example.org",
	}
	closed = Tunnel{
		Time:      t0,
		Client:    netip.MustParseAddrPort("192.0.2.7:51234"),
		Target:    []byte("/api/live/ws"),
		Route:     "/",
		Backend:   "127.0.0.1:3000",
		Duration:  3723*time.Second + 5*time.Millisecond,
		BytesUp:   1234,
		BytesDown: 987654321,
		Reason:    "idle_timeout",
	}
)

// TestTextExact pins the text format byte for byte.
func TestTextExact(t *testing.T) {
	for _, tc := range []struct {
		r    *Request
		t    *Tunnel
		want string
	}{
		{&relayed, nil, `time=2026-11-03T10:00:00.123Z msg=request client=192.0.2.7:51234 method=GET target="/loki/api/v1/query?query={job=\"x\"}" status=200 bytes_in=312 bytes_out=4096 duration=0.000812 route=/loki/ backend=127.0.0.1:3100 connect=0.000101` + "\n"},
		{&answered, nil, `time=2026-11-03T11:00:00.123+01:00 msg=request client=[2001:db8::1]:443 method=GET target=/nope status=404 bytes_in=40 bytes_out=120 duration=2.000000 route=none backend="" connect=0.000000 answered=no_route detail="no route for host example.org"` + "\n"},
		{nil, &closed, `time=2026-11-03T10:00:00.123Z msg=tunnel client=192.0.2.7:51234 target=/api/live/ws route=/ backend=127.0.0.1:3000 duration=3723.005000 bytes_up=1234 bytes_down=987654321 reason=idle_timeout` + "\n"},
	} {
		got := format(Text, tc.r, tc.t)
		if got != tc.want {
			t.Errorf("got\n%s\nwant\n%s", got, tc.want)
		}
		if _, _, err := parseLogfmt(got); err != nil {
			t.Errorf("%q: %v", got, err)
		}
	}
}

// TestFieldsBothFormats asserts every field of both line kinds in both formats, through a
// parser (encoding/json, and the strict logfmt parser above).
func TestFieldsBothFormats(t *testing.T) {
	weird := relayed
	weird.Method = []byte("G\"ET")
	weird.Target = []byte("/a b\\c\x00\x1f\x7f\xff\xfe\xe2\x80\xa8é☃\U0001F600\n\r\t=\"")
	weird.Client = netip.AddrPort{}
	for _, tc := range []struct {
		name string
		r    *Request
		t    *Tunnel
		want map[string]string
	}{
		{"relayed", &relayed, nil, map[string]string{"time": "2026-11-03T10:00:00.123Z", "msg": "request",
			"client": "192.0.2.7:51234", "method": "GET", "target": `/loki/api/v1/query?query={job="x"}`,
			"status": "200", "bytes_in": "312", "bytes_out": "4096", "duration": "0.000812", "route": "/loki/",
			"backend": "127.0.0.1:3100", "connect": "0.000101"}},
		{"answered", &answered, nil, map[string]string{"time": "2026-11-03T11:00:00.123+01:00", "msg": "request",
			"client": "[2001:db8::1]:443", "method": "GET", "target": "/nope", "status": "404", "bytes_in": "40",
			"bytes_out": "120", "duration": "2.000000", "route": "none", "backend": "", "connect": "0.000000",
			"answered": "no_route", "detail": "no route for host example.org"}},
		{"weird", &weird, nil, map[string]string{"time": "2026-11-03T10:00:00.123Z", "msg": "request",
			"client": "", "method": string(weird.Method), "target": string(weird.Target),
			"status": "200", "bytes_in": "312", "bytes_out": "4096", "duration": "0.000812", "route": "/loki/",
			"backend": "127.0.0.1:3100", "connect": "0.000101"}},
		{"tunnel", nil, &closed, map[string]string{"time": "2026-11-03T10:00:00.123Z", "msg": "tunnel",
			"client": "192.0.2.7:51234", "target": "/api/live/ws", "route": "/", "backend": "127.0.0.1:3000",
			"duration": "3723.005000", "bytes_up": "1234", "bytes_down": "987654321", "reason": "idle_timeout"}},
	} {
		t.Run(tc.name+"/text", func(t *testing.T) {
			line := format(Text, tc.r, tc.t)
			keys, vals, err := parseLogfmt(line)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if keys[0] != "time" || keys[1] != "msg" || len(keys) != len(tc.want) {
				t.Errorf("keys %v", keys)
			}
			for k, want := range tc.want {
				if vals[k] != want {
					t.Errorf("%s = %q, want %q", k, vals[k], want)
				}
			}
		})
		t.Run(tc.name+"/json", func(t *testing.T) {
			line := format(JSON, tc.r, tc.t)
			if !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
				t.Fatalf("not one JSON line: %q", line)
			}
			dec := json.NewDecoder(strings.NewReader(line))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if len(m) != len(tc.want) {
				t.Errorf("%d fields, want %d: %s", len(m), len(tc.want), line)
			}
			for k, want := range tc.want {
				v, ok := m[k]
				if !ok {
					t.Errorf("%s missing", k)
					continue
				}
				switch x := v.(type) {
				case json.Number:
					if x.String() != want {
						t.Errorf("%s = %s, want %s", k, x, want)
					}
				case string:
					raw, err := unescapeValue(x)
					if err != nil || string(raw) != want {
						t.Errorf("%s = %q (%v), want %q", k, raw, err, want)
					}
				default:
					t.Errorf("%s has type %T", k, v)
				}
			}
			if !bytes.HasPrefix([]byte(line), []byte(`{"time":`)) {
				t.Errorf("line does not start with time: %s", line)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"text": Text, "json": JSON} {
		if f, err := ParseFormat(in); err != nil || f != want || f.String() != in {
			t.Errorf("ParseFormat(%q) = %v, %v", in, f, err)
		}
	}
	for _, bad := range []string{"", "JSON", "logfmt"} {
		if _, err := ParseFormat(bad); err == nil {
			t.Errorf("ParseFormat(%q) accepted", bad)
		}
	}
}

func TestWhyNames(t *testing.T) {
	seen := map[string]bool{}
	for w := Why(1); w < numWhy; w++ {
		n := w.String()
		if n == "" || seen[n] || !bare(n) {
			t.Errorf("Why(%d) = %q", w, n)
		}
		seen[n] = true
	}
	if Relayed.String() != "" || Why(200).String() != "invalid" {
		t.Error("Relayed / out of range")
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0.000000", -5: "0.000000", 999: "0.000000",
		time.Microsecond: "0.000001", 1500 * time.Millisecond: "1.500000", 36 * time.Hour: "129600.000000"} {
		if got := string(appendSeconds(nil, d)); got != want {
			t.Errorf("%v: %s, want %s", d, got, want)
		}
	}
}

// TestClockCache: the cached second is replaced when the second, or the zone, changes.
func TestClockCache(t *testing.T) {
	var c clock
	times := []time.Time{t0, t0.Add(10 * time.Millisecond), t0.Add(time.Second), t0.Add(time.Second).In(time.FixedZone("", -7200)), t0.Add(-time.Second)}
	for _, tm := range times {
		got := string(c.append(nil, tm))
		want := tm.Format("2006-01-02T15:04:05.000Z07:00")
		if got != want {
			t.Errorf("%v: %s, want %s", tm, got, want)
		}
	}
}
