package classify

import (
	"strconv"
	"strings"
)

// Parameterized is a statement whose numeric literals were replaced by parameters, so that the
// proxy can prepare it once per server connection and run it with the literals as parameter
// values: PostgreSQL then parses and plans the text once instead of at every execution.
type Parameterized struct {
	// Text is the statement with each replaced literal written as $n padded with spaces to the
	// literal's length: error positions the server reports stay those of the original text.
	Text string
	// Values are the literals for $1, $2, ..., as written.
	Values []string
	// Types are the literals' types as PostgreSQL's parser types them (OIDs of int4, int8 or
	// numeric): a parameter of that type is resolved exactly as the literal would be.
	Types []uint32
}

// Type OIDs of PostgreSQL's numeric literals (make_const in parse_node.c).
const (
	OIDInt4    = 23
	OIDInt8    = 20
	OIDNumeric = 1700
)

// maxParameterizeLen is the longest text Parameterize looks at: longer ones (bulk INSERTs with
// inline rows) are rarely repeated and not worth preparing.
const maxParameterizeLen = 8 << 10

// Parameterize replaces the numeric literals of one plannable statement (SELECT, INSERT, UPDATE,
// DELETE, VALUES, WITH ...) by typed parameters. It reports false for anything else, and for texts
// its lexer does not fully understand; then the text must be sent as it is.
//
// Only numeric literals are replaced, and only where a parameter of the literal's own type means
// the same thing:
//   - strings stay: an unknown-typed literal is resolved by context in ways a parameter is not;
//   - a literal that is a whole ORDER BY / GROUP BY / DISTINCT ON item stays (it names an output
//     column), as does every literal inside a type modifier (numeric(10,2), varchar(20),
//     CURRENT_TIMESTAMP(3)), inside ON CONFLICT's inference clause (index predicates must match)
//     and inside a parenthesised ORDER BY / GROUP BY item (grouping sets); a literal text kept
//     once is kept everywhere, so that GROUP BY expressions still match the select list's;
//   - equal literals share one parameter, so that equal expressions stay equal
//     (SELECT a + 10 ... GROUP BY a + 10);
//   - literals shorter than their placeholder stay (1-digit numbers: $1 is two characters), which
//     also leaves the planner the small constants that select partial indexes and skewed values;
//   - -2147483648 and -9223372036854775808 stay (the parser types the negated literal one size
//     smaller than the unsigned one).
func Parameterize(sql string) (Parameterized, bool) {
	if len(sql) > maxParameterizeLen {
		return Parameterized{}, false
	}
	type frame struct {
		byList   bool // inside an ORDER BY / GROUP BY / PARTITION BY / DISTINCT ON list
		distinct bool // this frame is DISTINCT ON's parenthesised list
		keep     bool // every literal here stays (type modifier, ON CONFLICT inference, nested by-list)
		conflict bool // after ON CONFLICT, up to DO
	}
	var (
		lits      []literal
		kept      map[string]bool
		frames    = []frame{{}}
		prev      token // the previous token
		prev2     token
		typCtx    bool // the identifiers since the last :: or AS may be a type name
		typBounds bool // inside a type name's array bounds
		first     = true
	)
	keep := func(text string) {
		if kept == nil {
			kept = map[string]bool{}
		}
		kept[text] = true
	}
	l := lexer{src: sql}
	for {
		tok := l.next()
		f := &frames[len(frames)-1]
		if first && tok.kind != tIdent {
			return Parameterized{}, false
		}
		switch tok.kind {
		case tEOF:
			if len(frames) != 1 || first {
				return Parameterized{}, false
			}
			return rewrite(sql, lits, kept)
		case tBad, tParam:
			return Parameterized{}, false
		case tSemi:
			if l.next().kind != tEOF || len(frames) != 1 {
				return Parameterized{}, false
			}
			return rewrite(sql, lits, kept)
		case tIdent:
			w := strings.ToLower(tok.text)
			if first {
				switch w {
				case "select", "insert", "update", "delete", "values", "with":
				default:
					return Parameterized{}, false
				}
			}
			switch w {
			case "into":
				// SELECT ... INTO creates a table (a utility statement, which takes no parameters).
				if !(prev.kind == tIdent && strings.EqualFold(prev.text, "insert")) {
					return Parameterized{}, false
				}
			case "by":
				if prev.kind == tIdent && (strings.EqualFold(prev.text, "order") || strings.EqualFold(prev.text, "group") ||
					strings.EqualFold(prev.text, "partition")) {
					f.byList = true
				}
			case "limit", "offset", "fetch", "having", "window", "for", "union", "intersect", "except", "returning", "range", "rows", "groups":
				f.byList = false
			case "conflict":
				f.conflict = true
			case "do":
				f.conflict = false
			case "as":
				typCtx = true
			}
			if w != "as" && !(typCtx && (prev.kind == tIdent || prev.kind == tTypecast || prev.kind == tDot)) {
				typCtx = false
			}
		case tLParen:
			nf := frame{keep: f.keep || f.conflict || f.byList && !(prev.kind == tIdent && !isSortWord(prev.text))}
			if prev.kind == tIdent {
				if typCtx && !strings.EqualFold(prev.text, "as") && !strings.EqualFold(prev.text, "materialized") || isTypmodWord(prev.text) {
					nf.keep = true
				}
				if strings.EqualFold(prev.text, "on") && prev2.kind == tIdent && strings.EqualFold(prev2.text, "distinct") {
					nf.byList, nf.distinct = true, true
				}
			}
			frames = append(frames, nf)
			typCtx = false
		case tRParen:
			if len(frames) == 1 {
				return Parameterized{}, false
			}
			frames = frames[:len(frames)-1]
			typCtx = false
		case tNumber:
			end := l.pos
			start := end - len(tok.text)
			ordinal := f.byList && (prev.kind == tComma || prev.kind == tIdent && strings.EqualFold(prev.text, "by") ||
				prev.kind == tLParen && f.distinct)
			// PostgreSQL folds a unary minus into the literal, which types -2147483648 as int4 and
			// -9223372036854775808 as int8; a parameter holds the unsigned value, typed one size up.
			folded := prev.kind == tOp && prev.text == "-" && literalType("-"+tok.text) != literalType(tok.text)
			if f.keep || f.conflict || ordinal || folded || typBounds {
				keep(tok.text)
			} else {
				lits = append(lits, literal{start, end})
			}
			if !typBounds {
				typCtx = false
			}
		case tLBracket:
			// int[10]: array bounds in a type name are constants too.
			typBounds = typCtx && (prev.kind == tIdent || prev.kind == tRBracket || prev.kind == tQIdent)
		case tRBracket:
			if !typBounds {
				typCtx = false
			}
			typBounds = false
		case tTypecast:
			typCtx = true
		case tDot:
			// schema.type keeps a type context going
		default:
			typCtx = false
		}
		first = false
		prev2, prev = prev, tok
	}
}

// literal is the position of a numeric literal in the text.
type literal struct{ start, end int }

// rewrite writes the placeholders into the text.
func rewrite(sql string, lits []literal, kept map[string]bool) (Parameterized, bool) {
	p := Parameterized{Text: sql}
	if len(lits) == 0 {
		return p, true
	}
	var b []byte
	var index map[string]int
	for _, lit := range lits {
		text := sql[lit.start:lit.end]
		if kept[text] {
			continue
		}
		n, seen := index[text]
		if !seen {
			n = len(p.Values) + 1
			if len(text) < len(strconv.Itoa(n))+1 {
				continue // shorter than its placeholder
			}
			if n > 65535 {
				return Parameterized{}, false
			}
			if index == nil {
				index = map[string]int{}
				b = []byte(sql)
			}
			index[text] = n
			p.Values = append(p.Values, text)
			p.Types = append(p.Types, literalType(text))
		}
		ph := "$" + strconv.Itoa(n)
		if len(ph) > len(text) {
			continue // an earlier literal took a number too long for this one: it stays
		}
		copy(b[lit.start:], ph)
		for i := lit.start + len(ph); i < lit.end; i++ {
			b[i] = ' '
		}
	}
	if b != nil {
		p.Text = string(b)
	}
	return p, true
}

// literalType is the type PostgreSQL gives a numeric literal: int4 when it fits, else int8 when it
// fits, else numeric; anything with a decimal point is numeric.
func literalType(text string) uint32 {
	if strings.IndexByte(text, '.') >= 0 {
		return OIDNumeric
	}
	if _, err := strconv.ParseInt(text, 10, 32); err == nil {
		return OIDInt4
	}
	if _, err := strconv.ParseInt(text, 10, 64); err == nil {
		return OIDInt8
	}
	return OIDNumeric
}

// isTypmodWord reports whether a parenthesis after this word holds constants PostgreSQL's grammar
// requires literally: type modifiers of built-in types and the precision of the current-time
// functions.
func isTypmodWord(w string) bool {
	switch strings.ToLower(w) {
	case "numeric", "decimal", "dec", "float", "char", "character", "varchar", "varying", "nchar",
		"bit", "time", "timestamp", "timestamptz", "timetz", "interval", "second",
		"current_time", "current_timestamp", "localtime", "localtimestamp":
		return true
	}
	return false
}

// isSortWord reports whether a parenthesis after this word, inside an ORDER BY or GROUP BY list,
// still opens a grouping or sort item (not a function call's arguments).
func isSortWord(w string) bool {
	switch strings.ToLower(w) {
	case "by", "rollup", "cube", "sets", "grouping":
		return true
	}
	return false
}
