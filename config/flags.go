package config

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/route"
)

// Repeatable is implemented by flag values that collect one element per occurrence on the
// command line (-route A -route B). In the file such a flag takes an array, and Set is called
// once per element; a flag without it refuses arrays.
type Repeatable interface {
	flag.Value
	Repeatable() bool
}

// CommandLineOnly are flags that make no sense in a file (they say which file to read, or what
// to do instead of serving); their keys are refused.
var CommandLineOnly = map[string]bool{"config": true, "check-config": true, "version": true, "help": true, "h": true}

// RouteFlag is the -route flag: repeatable, [HOST]/PREFIX=ADDR[,ADDR...] (route.ParseSpec).
// Define it with fs.Var(&routes, "route", usage). It holds the command line's routes only: the
// routes to serve are Config.Routes, which Load composes from it, -backend and the file.
type RouteFlag []route.Spec

func (r *RouteFlag) String() string {
	if r == nil {
		return ""
	}
	s := make([]string, len(*r))
	for i := range *r {
		s[i] = (*r)[i].String()
	}
	return strings.Join(s, " ")
}

// Set parses one -route value and appends it.
func (r *RouteFlag) Set(v string) error {
	sp, err := route.ParseSpec(v)
	if err != nil {
		return err
	}
	*r = append(*r, sp)
	return nil
}

// Get returns the routes as []route.Spec.
func (r *RouteFlag) Get() any { return []route.Spec(*r) }

// Repeatable marks -route as repeatable.
func (r *RouteFlag) Repeatable() bool { return true }

// StringsFlag is a repeatable string flag for other commands' list flags (-tls-cert A -tls-cert
// B); in a file it is an array of strings.
type StringsFlag []string

func (s *StringsFlag) String() string {
	if s == nil {
		return ""
	}
	return strings.Join(*s, ",")
}

// Set appends v.
func (s *StringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// Get returns the values as []string.
func (s *StringsFlag) Get() any { return []string(*s) }

// Repeatable marks the flag as repeatable.
func (s *StringsFlag) Repeatable() bool { return true }

// flagName is the flag a top-level key stands for: its name with '_' written '-'.
func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// keyName is the key a flag is written as in the file.
func keyName(flagName string) string { return strings.ReplaceAll(flagName, "-", "_") }

// applyFlag sets flag f from the TOML value v. Every element of an array goes through Set for
// a Repeatable flag. The value must have the TOML type the flag's type calls for.
func applyFlag(f *flag.Flag, v any) error {
	if rep, ok := f.Value.(Repeatable); ok && rep.Repeatable() {
		list, isList := v.([]any)
		if !isList {
			list = []any{v}
		}
		for i, el := range list {
			s, err := elementText(f, el)
			if err == nil {
				err = f.Value.Set(s)
			}
			if err != nil {
				if isList {
					return fmt.Errorf("element %d: %w", i+1, err)
				}
				return err
			}
		}
		return nil
	}
	if _, isList := v.([]any); isList {
		return fmt.Errorf("wants a single value, not an array (-%s is not repeatable)", f.Name)
	}
	s, err := flagText(f, v)
	if err != nil {
		return err
	}
	if err := f.Value.Set(s); err != nil {
		return fmt.Errorf("invalid value %q: %v", s, err)
	}
	return nil
}

// elementText converts one element of a repeatable flag: a list of strings (what Get returns
// says so) takes strings only; other lists take any scalar as text.
func elementText(f *flag.Flag, v any) (string, error) {
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case []string, []route.Spec:
			if s, ok := v.(string); ok {
				return s, nil
			}
			return "", wantType("a string", v)
		}
	}
	return flagText(f, v)
}

// flagText converts a TOML value to the text fs.Set takes, checking that its TOML type fits the
// flag's Go type.
func flagText(f *flag.Flag, v any) (string, error) {
	var want any
	if g, ok := f.Value.(flag.Getter); ok {
		want = g.Get()
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		want = true
	}
	switch want.(type) {
	case bool:
		if b, ok := v.(bool); ok {
			return strconv.FormatBool(b), nil
		}
		return "", wantType("a boolean (true or false)", v)
	case int, int64, uint, uint64:
		if n, ok := v.(int64); ok {
			return strconv.FormatInt(n, 10), nil
		}
		return "", wantType("an integer", v)
	case float64:
		switch n := v.(type) {
		case float64:
			if math.IsNaN(n) || math.IsInf(n, 0) {
				return "", fmt.Errorf("want a finite number, got %v", n)
			}
			return strconv.FormatFloat(n, 'g', -1, 64), nil
		case int64:
			return strconv.FormatInt(n, 10), nil
		}
		return "", wantType("a number", v)
	case time.Duration:
		s, ok := v.(string)
		if !ok {
			return "", wantType(`a duration string such as "10s"`, v)
		}
		if _, err := time.ParseDuration(s); err != nil {
			return "", fmt.Errorf("%q is not a duration (write it like \"10s\", \"1m30s\", \"0s\")", s)
		}
		return s, nil
	case string:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return "", wantType("a string", v)
	}
	// A Value of a type this package does not know (flag.Func, flag.TextVar, a custom list):
	// scalars go through as text, the Value validates them.
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	}
	return "", wantType("a string, number or boolean", v)
}

func wantType(want string, v any) error {
	return fmt.Errorf("want %s, got %s", want, describe(v))
}

// describe names a decoded TOML value's type for messages.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date/time"
}

// suggest returns the known name closest to key (edit distance at most 2), or "".
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
