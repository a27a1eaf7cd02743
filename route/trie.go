package route

// trie is a radix tree of the path prefixes of one host group. Match walks it once along the
// request path, remembering the deepest node whose route accepts the path at that point, so the
// cost depends on the length of the matched prefix, not on the number of routes.
type trie struct {
	root node
}

type node struct {
	label    string  // edge from the parent
	first    []byte  // first byte of each child's label, parallel to children
	children []*node // kept few per node by the radix structure
	r        *Route  // a route whose prefix ends exactly here, or nil
}

// insert adds r under prefix p (duplicates were rejected before).
func (t *trie) insert(p string, r *Route) {
	n := &t.root
	for {
		if p == "" {
			n.r = r
			return
		}
		i := n.child(p[0])
		if i < 0 {
			n.add(&node{label: p, r: r})
			return
		}
		c := n.children[i]
		k := commonPrefix(p, c.label)
		if k < len(c.label) {
			// Split c: a new node for the shared part, c keeps the rest below it.
			mid := &node{label: c.label[:k]}
			c.label = c.label[k:]
			mid.add(c)
			n.children[i] = mid
			c = mid
		}
		n, p = c, p[k:]
	}
}

func (n *node) child(b byte) int {
	for i, f := range n.first {
		if f == b {
			return i
		}
	}
	return -1
}

func (n *node) add(c *node) {
	n.first = append(n.first, c.label[0])
	n.children = append(n.children, c)
}

func commonPrefix(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// lookup returns the route with the longest prefix that accepts path (which holds no query).
// A prefix ending in '/' accepts every path that starts with it; any other prefix accepts the
// path equal to it and the paths that continue it with '/'.
func (t *trie) lookup(path []byte) *Route {
	var best *Route
	n := &t.root
	i := 0
	for {
		if r := n.r; r != nil && (r.slash || i == len(path) || path[i] == '/') {
			best = r
		}
		if i == len(path) {
			return best
		}
		c := path[i]
		var next *node
		for k, f := range n.first {
			if f == c {
				next = n.children[k]
				break
			}
		}
		if next == nil {
			return best
		}
		l := next.label
		if len(path)-i < len(l) || string(path[i:i+len(l)]) != l {
			return best
		}
		i += len(l)
		n = next
	}
}
