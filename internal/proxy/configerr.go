package proxy

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file turns the YAML decoder's errors, which speak of Go types ("field pool_sise not found in
// type proxy.Config", "cannot unmarshal !!str `fast` into time.Duration"), into errors about the file:
// the line, the key, what is wrong, and for an unknown key the valid key it most likely meant.

// yamlKey is one key (or sequence item) of a configuration file.
type yamlKey struct {
	path  string     // "pool_size", "nodes[0].address", "write_functions[1]"
	name  string     // the key as written ("" for a sequence item)
	line  int        // of the key, or of the item
	value *yaml.Node // its value
}

// yamlKeys lists every key and sequence item of src, in order.
func yamlKeys(src []byte) []yamlKey {
	var root yaml.Node
	_ = yaml.Unmarshal(src, &root)
	var keys []yamlKey
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + p
				}
				keys = append(keys, yamlKey{path: p, name: k.Value, line: k.Line, value: v})
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				keys = append(keys, yamlKey{path: p, line: c.Line, value: c})
				walk(c, p)
			}
		}
	}
	walk(&root, "")
	return keys
}

var (
	reUnknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)
	reFieldTwice   = regexp.MustCompile(`^line (\d+): field (\S+) already set in type \S+$`)
	reKeyTwice     = regexp.MustCompile(`^line (\d+): mapping key "(.*)" already defined at line (\d+)$`)
	reCannotRead   = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+)(?: `(.*)`)? into \\S+$")
	reLine         = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

// explainYAMLError rewrites the YAML decoder's error about src into one line per problem, each
// "config: line N: <key>: <what is wrong>", without Go type names.
func explainYAMLError(src []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	keys := yamlKeys(src)
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		msgs = append(msgs, "config: "+explainYAMLProblem(keys, m))
	}
	return errors.New(strings.Join(msgs, "\n"))
}

func explainYAMLProblem(keys []yamlKey, m string) string {
	if g := reUnknownField.FindStringSubmatch(m); g != nil {
		line, _ := strconv.Atoi(g[1])
		k, ok := keyAt(keys, line, func(k yamlKey) bool { return k.name == g[2] })
		if !ok {
			return fmt.Sprintf("line %d: unknown key %s", line, g[2])
		}
		parent := strings.TrimSuffix(strings.TrimSuffix(k.path, k.name), ".")
		return fmt.Sprintf("line %d: unknown key %s%s", line, k.path, suggestKey(typeAt(parent), k.name))
	}
	if g := reFieldTwice.FindStringSubmatch(m); g != nil {
		line, _ := strconv.Atoi(g[1])
		path := g[2]
		if k, ok := keyAt(keys, line, func(k yamlKey) bool { return k.name == g[2] }); ok {
			path = k.path
		}
		return fmt.Sprintf("line %d: %s is set twice", line, path)
	}
	if g := reKeyTwice.FindStringSubmatch(m); g != nil {
		line, _ := strconv.Atoi(g[1])
		path := g[2]
		if k, ok := keyAt(keys, line, func(k yamlKey) bool { return k.name == g[2] }); ok {
			path = k.path
		}
		return fmt.Sprintf("line %d: %s is set twice (first at line %s)", line, path, g[3])
	}
	if g := reCannotRead.FindStringSubmatch(m); g != nil {
		return explainCannotRead(keys, g)
	}
	if g := reLine.FindStringSubmatch(m); g != nil {
		return fmt.Sprintf("line %s: %s", g[1], g[2])
	}
	return m
}

// explainCannotRead words "line N: cannot unmarshal !!tag `value` into type" (g is its match of
// reCannotRead) as the key, what it wants and what it got.
func explainCannotRead(keys []yamlKey, g []string) string {
	line, _ := strconv.Atoi(g[1])
	tag, shown := g[2], strings.TrimSuffix(g[3], "...") // the library shortens long values to 7 characters and "..."
	k, ok := keyAt(keys, line, func(k yamlKey) bool {
		switch k.value.Kind {
		case yaml.SequenceNode:
			return tag == "seq"
		case yaml.MappingNode:
			return tag == "map"
		case yaml.ScalarNode:
			return k.value.Line == line && strings.HasPrefix(k.value.Value, shown)
		}
		return false
	})
	got := strconv.Quote(g[3])
	if ok {
		got = strconv.Quote(k.value.Value)
	}
	switch tag {
	case "seq":
		got = "a list"
	case "map":
		got = "a mapping (key: value)"
	}
	if !ok {
		return fmt.Sprintf("line %d: %s is not valid here", line, got)
	}
	want := "another kind of value"
	if t := typeAt(k.path); t != nil {
		want = describeType(t)
	}
	return fmt.Sprintf("line %d: %s: want %s, got %s", line, k.path, want, got)
}

// keyAt finds the key at line that ok accepts (several keys share a line in flow style: {a: 1, b: 2}).
func keyAt(keys []yamlKey, line int, ok func(yamlKey) bool) (yamlKey, bool) {
	for _, k := range keys {
		if (k.line == line || k.value.Line == line) && ok(k) {
			return k, true
		}
	}
	return yamlKey{}, false
}

// typeAt returns the Go type that the key path ("nodes[0].address") decodes into, or nil if the path
// leads nowhere in Config.
func typeAt(path string) reflect.Type {
	t := reflect.TypeFor[Config]()
	if path == "" {
		return t
	}
	for _, part := range strings.Split(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		t = fieldType(t, name)
		for ; t != nil && rest != ""; _, rest, _ = strings.Cut(rest, "[") {
			t = deref(t)
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		}
		if t == nil {
			return nil
		}
	}
	return t
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// yamlFields lists a struct type's YAML keys with their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	if t == nil {
		return nil
	}
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // the YAML library's default
		}
		out[name] = f.Type
	}
	return out
}

func fieldType(t reflect.Type, key string) reflect.Type {
	if t == nil {
		return nil
	}
	return yamlFields(t)[key]
}

// describeType says in words what a value of type t is written as.
func describeType(t reflect.Type) string {
	t = deref(t)
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration such as 500ms, 1s or 10m"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	}
	return "a mapping (key: value)"
}

// suggestKey says which valid key of struct type t an unknown key most likely meant: the nearest by
// edit distance, if near enough to be a typo; else it lists the valid keys when there are few.
func suggestKey(t reflect.Type, unknown string) string {
	fields := yamlFields(t)
	if len(fields) == 0 {
		return ""
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	best, bestDist := "", len(unknown)
	for _, name := range names {
		if d := editDistance(strings.ToLower(unknown), name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best != "" && bestDist <= max(2, len(unknown)/3) {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	if len(names) <= 8 {
		return " (valid keys here: " + strings.Join(names, ", ") + ")"
	}
	return " (docs/proxy.md lists every key)"
}

// editDistance is the Levenshtein distance between a and b, counting a swap of two adjacent letters
// as one edit (the commonest typo).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// withLines adds, to each of Validate's errors ("config: nodes[0].address: want host:port ..."), the
// line of the key it names, when src has that key. The result wraps err.
func withLines(src []byte, err error) error {
	keys := yamlKeys(src)
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		rest, ok := strings.CutPrefix(l, "config: ")
		if !ok {
			continue
		}
		key, _, ok := strings.Cut(rest, ": ")
		if !ok {
			continue
		}
		if j := slices.IndexFunc(keys, func(k yamlKey) bool { return k.path == key }); j >= 0 {
			lines[i] = fmt.Sprintf("config: line %d: %s", keys[j].line, rest)
		}
	}
	return &linedError{msg: strings.Join(lines, "\n"), err: err}
}

// linedError is an error whose text has been given line numbers.
type linedError struct {
	msg string
	err error
}

func (e *linedError) Error() string { return e.msg }
func (e *linedError) Unwrap() error { return e.err }
