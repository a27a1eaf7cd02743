package config

import (
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// positions maps a key path ("listen", "route.1.backends", "route.1.backends.0") to the line
// where it is written. Array-of-tables elements are numbered from 0 in file order.
type positions map[string]int

// indexPositions walks the document's syntax tree. It is only called on a document the decoder
// accepted, so it can ignore syntax errors.
func indexPositions(data []byte) positions {
	pos := positions{}
	var p unstable.Parser
	p.Reset(data)
	arrays := map[string]int{} // resolved array-table path -> elements so far
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyParts(&p, e)
			if len(parts) == 0 {
				continue
			}
			// The enclosing tables resolve to their current array element; the last part
			// is the table (or array of tables) being opened.
			path := append(resolveArrays(parts[:len(parts)-1], arrays), parts[len(parts)-1])
			if e.Kind == unstable.ArrayTable {
				k := strings.Join(path, ".")
				n := arrays[k]
				arrays[k] = n + 1
				path = append(path, strconv.Itoa(n))
			}
			table = path
			pos.set(path, line)
		case unstable.KeyValue:
			pos.keyValue(&p, e, table)
		}
	}
	return pos
}

func keyParts(p *unstable.Parser, n *unstable.Node) ([]string, int) {
	var parts []string
	line := 0
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = p.Shape(k.Raw).Start.Line
		}
		parts = append(parts, string(k.Data))
	}
	return parts, line
}

// resolveArrays inserts the current element index after every prefix that names an array of
// tables: [route.sub] after two [[route]] headers is route.1.sub.
func resolveArrays(parts []string, arrays map[string]int) []string {
	var out []string
	for _, part := range parts {
		out = append(out, part)
		if n := arrays[strings.Join(out, ".")]; n > 0 {
			out = append(out, strconv.Itoa(n-1))
		}
	}
	return out
}

func (pos positions) keyValue(p *unstable.Parser, n *unstable.Node, base []string) {
	parts, line := keyParts(p, n)
	path := append(append([]string(nil), base...), parts...)
	pos.set(path, line)
	pos.value(p, n.Value(), path, line)
}

func (pos positions) value(p *unstable.Parser, v *unstable.Node, path []string, line int) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				pos.keyValue(p, c, path)
			}
		}
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			c := it.Node()
			el := append(append([]string(nil), path...), strconv.Itoa(i))
			l := line
			if c.Raw.Length > 0 {
				l = p.Shape(c.Raw).Start.Line
			}
			pos.set(el, l)
			pos.value(p, c, el, l)
		}
	}
}

func (pos positions) set(path []string, line int) {
	k := strings.Join(path, ".")
	if _, ok := pos[k]; !ok && line > 0 {
		pos[k] = line
	}
}

// line returns the line of path, or of its closest enclosing key that has one, or 0.
func (pos positions) line(path ...string) int {
	for n := len(path); n > 0; n-- {
		if l, ok := pos[strings.Join(path[:n], ".")]; ok {
			return l
		}
	}
	return 0
}
