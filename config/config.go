package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/wsgate/wsgate/route"
)

// Config is one configuration: the file's settings applied to a FlagSet, and the routes to
// serve. Load builds a new one each time (a SIGHUP reload calls it with a fresh FlagSet); it
// never changes a Config already in use.
type Config struct {
	File         string         // the file read, "" for none
	Routes       []route.Spec   // the routes to serve, in order
	RouteOrigins []string       // per route: "FILE:LINE", "-route", "-backend" or "-backend (default)"
	FromFile     []string       // flags whose value came from the file, sorted
	Lines        map[string]int // flag name -> its line in the file, for the flags in FromFile
	Overridden   []string       // flags set in the file and on the command line (the command line won), sorted
}

// commandLine is the File of errors about the command line's own routes.
const commandLine = "command line"

// Load reads the TOML file at path (none when path is "") and applies it to fs, whose
// command-line arguments must already be parsed: each top-level key sets the flag of the same
// name (with '_' for '-') unless the command line set it. fs is the only thing Load changes, so
// a reload gives it a fresh FlagSet with the same definitions and the same arguments.
//
// Routes, in order of precedence: the command line's -route flags (a *RouteFlag named "route")
// plus "/=ADDR" for a -backend given on the command line; else the file's route entries plus
// "/=ADDR" for its backend key; else "/=" the -backend flag's default. A route that is neither
// can be given twice: duplicates are errors.
//
// The error, if any, is Errors: every problem found, each with file and line.
func Load(path string, fset *flag.FlagSet) (*Config, error) {
	if path == "" {
		return LoadBytes("", nil, fset)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, Errors{{File: path, Msg: "cannot read: " + err.Error()}}
	}
	return LoadBytes(path, data, fset)
}

// Check validates the file at path for wsgate -check-config: Load on fs (a FlagSet nobody else
// uses), returning every error (none: the file is good).
func Check(path string, fset *flag.FlagSet) []error {
	if path == "" {
		return []error{errors.New("-check-config needs -config FILE")}
	}
	_, err := Load(path, fset)
	var es Errors
	if errors.As(err, &es) {
		return es.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

// loader is one Load in progress.
type loader struct {
	file     string
	pos      positions
	fs       *flag.FlagSet
	cmd      map[string]bool // flags set on the command line
	errs     Errors
	routes   []route.Spec
	origins  []string
	lines    []int    // per route: its line in the file, 0 when not from the file
	fileIdx  []int    // per route: its index in the file's route array, -1 when not from the file
	table    []bool   // per route: written as a table (its options have lines of their own)
	fromFile []string // flags the file set
	lineOf   map[string]int
}

// LoadBytes is Load for a file already read; name is used in messages.
func LoadBytes(name string, data []byte, fset *flag.FlagSet) (*Config, error) {
	l := &loader{file: name, fs: fset, cmd: map[string]bool{}, lineOf: map[string]int{}}
	fset.Visit(func(f *flag.Flag) { l.cmd[f.Name] = true })
	c := &Config{File: name}

	var fileRoutes []fileRoute
	fileNamesRoutes := false // the file has a route or backend key
	if name != "" {
		var doc map[string]any
		dec := toml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&doc); err != nil {
			return nil, Errors{l.decodeError(err)}
		}
		l.pos = indexPositions(data)
		keys := make([]string, 0, len(doc))
		for k := range doc {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if k == "route" || k == "backend" {
				fileNamesRoutes = true
			}
			if k == "route" {
				fileRoutes = l.fileRoutes(doc[k])
				continue
			}
			l.global(k, doc[k], c)
		}
	}

	// Routes: the command line's, else the file's, else the default backend.
	var rf *RouteFlag
	if f := fset.Lookup("route"); f != nil {
		rf, _ = f.Value.(*RouteFlag)
	}
	backend := fset.Lookup("backend")
	if rf != nil {
		for _, sp := range *rf {
			l.addRoute(sp, "-route", 0, -1)
		}
	}
	if backend != nil && l.cmd["backend"] {
		l.addBackend(backend.Value.String(), "-backend", 0)
	}
	// The command line's routes, if any, decide; else the file's, if it names any (even
	// broken ones: their errors are reported, the default backend does not stand in).
	decided := len(l.routes) > 0
	if !decided {
		for _, fr := range fileRoutes {
			l.addRoute(fr.spec, fmt.Sprintf("%s:%d", name, fr.line), fr.line, fr.idx)
			l.table = append(l.table[:len(l.routes)-1], fr.table)
		}
		if backend != nil && slices.Contains(l.fromFile, "backend") {
			line := l.pos.line("backend")
			l.addBackend(backend.Value.String(), fmt.Sprintf("%s:%d", name, line), line)
		}
		decided = fileNamesRoutes
	}
	if !decided && backend != nil && backend.Value.String() != "" {
		l.addBackend(backend.Value.String(), "-backend (default)", 0)
	}
	for _, err := range route.Validate(l.routes) {
		l.specError(err)
	}

	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.errs
	}
	c.Routes, c.RouteOrigins = l.routes, l.origins
	slices.Sort(l.fromFile)
	c.FromFile = l.fromFile
	c.Lines = l.lineOf
	slices.Sort(c.Overridden)
	return c, nil
}

func (l *loader) addRoute(sp route.Spec, origin string, line, fileIdx int) {
	l.routes = append(l.routes, sp)
	l.origins = append(l.origins, origin)
	l.lines = append(l.lines, line)
	l.fileIdx = append(l.fileIdx, fileIdx)
	l.table = append(l.table, false)
}

func (l *loader) addBackend(addr, origin string, line int) {
	if err := route.CheckBackend(addr); err != nil {
		file, key := l.file, "backend"
		if line == 0 {
			file, key = commandLine, "-backend"
		}
		l.errs = append(l.errs, &Error{File: file, Line: line, Key: key, Msg: err.Error()})
		return
	}
	l.addRoute(route.Spec{Prefix: "/", Backends: []string{addr}}, origin, line, -1)
}

func (l *loader) decodeError(err error) *Error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		return &Error{File: l.file, Line: row, Msg: msg}
	}
	return &Error{File: l.file, Msg: err.Error()}
}

func (l *loader) bad(line int, key, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// global applies one top-level key to its flag.
func (l *loader) global(key string, v any, c *Config) {
	line := l.pos.line(key)
	name := flagName(key)
	f := l.fs.Lookup(name)
	if strings.Contains(key, "-") || f == nil {
		msg := fmt.Sprintf("unknown key %q", key)
		if f != nil {
			msg += fmt.Sprintf(" (write %s: '_' for '-')", keyName(name))
		} else if s := suggest(key, l.knownKeys()); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		l.bad(line, "", "%s", msg)
		return
	}
	if CommandLineOnly[name] {
		l.bad(line, key, "-%s is a command-line flag only", name)
		return
	}
	if l.cmd[name] {
		c.Overridden = append(c.Overridden, name)
		return
	}
	if err := applyFlag(f, v); err != nil {
		l.bad(line, key, "%v", err)
		return
	}
	l.fromFile = append(l.fromFile, name)
	l.lineOf[name] = line
}

func (l *loader) knownKeys() []string {
	keys := []string{"route"}
	l.fs.VisitAll(func(f *flag.Flag) {
		if !CommandLineOnly[f.Name] {
			keys = append(keys, keyName(f.Name))
		}
	})
	return keys
}

// routeKeys are the keys of a [[route]] table.
var routeKeys = []string{
	"match", "backends", "strip_prefix", "preserve_host", "websocket", "header_timeout",
	"response_timeout", "tunnel_idle_timeout", "balance", "health_path", "health_interval",
	"source_addresses",
}

// fileRoute is one entry of the file's route array that decoded cleanly.
type fileRoute struct {
	spec  route.Spec
	line  int
	idx   int  // index in the route array
	table bool // a table, not a -route string
}

// fileRoutes decodes the route key: an array of tables ([[route]]) and/or -route strings.
func (l *loader) fileRoutes(v any) (out []fileRoute) {
	list, ok := v.([]any)
	if !ok {
		l.bad(l.pos.line("route"), "route", "want [[route]] tables or an array of -route strings, got %s", describe(v))
		return nil
	}
	for i, el := range list {
		line := l.pos.line("route", strconv.Itoa(i))
		key := fmt.Sprintf("route #%d", i+1)
		switch x := el.(type) {
		case string:
			sp, err := route.ParseSpec(x)
			if err != nil {
				l.bad(line, key, "%v", err)
				continue
			}
			out = append(out, fileRoute{sp, line, i, false})
		case map[string]any:
			if sp, ok := l.routeTable(i, x); ok {
				out = append(out, fileRoute{sp, line, i, true})
			}
		default:
			l.bad(line, key, "want a table or a -route string, got %s", describe(el))
		}
	}
	return out
}

// routeTable decodes one [[route]] table.
func (l *loader) routeTable(i int, m map[string]any) (route.Spec, bool) {
	var sp route.Spec
	n := len(l.errs)
	at := func(k string) (int, string) {
		return l.pos.line("route", strconv.Itoa(i), k), fmt.Sprintf("route #%d: %s", i+1, k)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := m[k]
		line, key := at(k)
		fail := func(err error) { l.bad(line, key, "%v", err) }
		switch k {
		case "match":
			s, err := str(v)
			if err == nil {
				sp.Host, sp.Prefix, err = route.ParseMatch(s)
			}
			if err != nil {
				fail(err)
			}
		case "backends":
			list, ok := v.([]any)
			if !ok {
				fail(wantType(`an array of "host:port" strings`, v))
				continue
			}
			if len(list) == 0 {
				fail(errors.New("empty: list at least one backend"))
			}
			for j, el := range list {
				s, err := str(el)
				if err == nil {
					err = route.CheckBackend(s)
				}
				if err != nil {
					l.bad(l.pos.line("route", strconv.Itoa(i), k, strconv.Itoa(j)), key, "%v", err)
					continue
				}
				sp.Backends = append(sp.Backends, s)
			}
		case "strip_prefix":
			if b, err := boolean(v); err != nil {
				fail(err)
			} else {
				sp.StripPrefix = b
			}
		case "preserve_host", "websocket":
			b, err := boolean(v)
			if err != nil {
				fail(err)
				continue
			}
			if k == "websocket" {
				sp.WebSocket = &b
			} else {
				sp.PreserveHost = &b
			}
		case "header_timeout", "response_timeout", "tunnel_idle_timeout", "health_interval":
			d, err := duration(v)
			if err != nil {
				fail(err)
				continue
			}
			switch k {
			case "header_timeout":
				sp.HeaderTimeout = &d
			case "response_timeout":
				sp.ResponseTimeout = &d
			case "tunnel_idle_timeout":
				sp.TunnelIdleTimeout = &d
			default:
				sp.HealthInterval = &d
			}
		case "balance":
			s, err := str(v)
			var b route.Balance
			if err == nil {
				b, err = route.ParseBalance(s)
			}
			if err != nil {
				fail(err)
				continue
			}
			sp.Balance = &b
		case "health_path":
			s, err := str(v)
			if err != nil {
				fail(err)
				continue
			}
			sp.HealthPath = &s
		case "source_addresses":
			list, ok := v.([]any)
			if !ok {
				fail(wantType("an array of IP address strings", v))
				continue
			}
			sp.SourceAddrs = []netip.Addr{}
			for j, el := range list {
				s, err := str(el)
				var a netip.Addr
				if err == nil {
					a, err = netip.ParseAddr(s)
				}
				if err != nil {
					l.bad(l.pos.line("route", strconv.Itoa(i), k, strconv.Itoa(j)), key, "%v", err)
					continue
				}
				sp.SourceAddrs = append(sp.SourceAddrs, a)
			}
		default:
			msg := fmt.Sprintf("unknown key %q", k)
			if s := suggest(k, routeKeys); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			l.bad(line, fmt.Sprintf("route #%d", i+1), "%s", msg)
		}
	}
	line := l.pos.line("route", strconv.Itoa(i))
	if _, ok := m["match"]; !ok {
		l.bad(line, fmt.Sprintf("route #%d", i+1), `no match key (write match = "/" or "host.example.com/prefix/")`)
	}
	if _, ok := m["backends"]; !ok {
		l.bad(line, fmt.Sprintf("route #%d", i+1), `no backends key (write backends = ["127.0.0.1:3000"])`)
	}
	return sp, len(l.errs) == n
}

// specError places a route.Validate error at the line of the route (and option) at fault.
func (l *loader) specError(err error) {
	var se *route.SpecError
	if !errors.As(err, &se) {
		l.errs = append(l.errs, &Error{File: l.file, Msg: err.Error()})
		return
	}
	msg := se.Err.Error()
	if o := se.Other; o >= 0 && o < len(l.origins) {
		// route.Validate numbers routes in the combined list; name the other one the way
		// the operator wrote it, and where.
		name, where := l.origins[o]+" "+l.routes[o].String(), ""
		switch {
		case l.fileIdx[o] >= 0:
			name, where = fmt.Sprintf("route #%d", l.fileIdx[o]+1), " ("+l.origins[o]+")"
		case l.lines[o] > 0:
			name, where = "the backend key", " ("+l.origins[o]+")"
		}
		msg = strings.ReplaceAll(msg, fmt.Sprintf("route #%d", o+1), name) + where
	}
	i := se.Index
	switch {
	case l.fileIdx[i] >= 0:
		fi := strconv.Itoa(l.fileIdx[i])
		line := l.pos.line("route", fi, se.Field)
		key := fmt.Sprintf("route #%d: %s", l.fileIdx[i]+1, se.Field)
		if !l.table[i] {
			key = fmt.Sprintf("route #%d", l.fileIdx[i]+1) // a -route string in the file
		}
		l.errs = append(l.errs, &Error{File: l.file, Line: line, Key: key, Msg: msg})
	case l.lines[i] > 0: // the file's backend key
		l.errs = append(l.errs, &Error{File: l.file, Line: l.lines[i], Key: "backend", Msg: msg})
	default:
		l.errs = append(l.errs, &Error{File: commandLine, Key: l.origins[i] + " " + se.Spec, Msg: msg})
	}
}

func str(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	return "", wantType("a string", v)
}

func boolean(v any) (bool, error) {
	if b, ok := v.(bool); ok {
		return b, nil
	}
	return false, wantType("a boolean (true or false)", v)
}

func duration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, wantType(`a duration string such as "10s"`, v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write it like \"10s\", \"1m30s\", \"0s\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q: must not be negative", s)
	}
	return d, nil
}
