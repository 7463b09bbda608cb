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
	// Rows reports that the statement may return rows (SELECT, VALUES, WITH, RETURNING). Only such
	// a statement can fail with "cached plan must not change result type" when a table changes
	// under it.
	Rows bool
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

// maxParamLiteral is the longest numeric literal made a parameter. A parameter is not folded with
// the constants around it in a generic plan; the implicit casts a shorter literal may meet
// (int4/int8/numeric to numeric, float4 or float8) cannot fail, so whether they run at planning
// or at execution makes no difference. (float4 overflows from 39 integer digits on.)
const maxParamLiteral = 30

// Parameterize replaces numeric literals of one plannable statement (SELECT, INSERT, UPDATE,
// DELETE, VALUES, WITH ...) by typed parameters. It reports false for anything else, and for texts
// its lexer does not fully understand; then the text must be sent as it is.
//
// A prepared statement is planned for its parameter values for five executions (a custom plan,
// which folds the values like literals), then usually once for all values (a generic plan, which
// cannot fold them). Folding decides more than speed: PostgreSQL evaluates constant
// sub-expressions at planning, so 100/0 in a CASE branch that never runs still fails, and a
// comparison of constants that folds to false drops the AND arm or CASE branch beside it before
// that is folded. A literal becomes a parameter only where neither can change what the statement
// does:
//
//   - as the whole right-hand operand of a comparison (=, <>, !=, <, <=, >, >=, LIKE, ILIKE)
//     whose left-hand side is a column name, or as a bound of col BETWEEN ... AND ...;
//   - as a whole item of col [NOT] IN (...), or of a VALUES row of an INSERT (its values are always
//     computed, by the plan or at planning, with the same error);
//   - as the whole LIMIT or OFFSET value;
//   - optionally negated (-12345), when no longer than 30 characters, and not -2147483648 or
//     -9223372036854775808 (the parser types the negated literal one size smaller).
//
// When any other constant remains where it could be folded (a literal or string anywhere else: an
// operand of arithmetic, a function argument, a CASE result, a cast, an UPDATE's SET value), no
// literal becomes a parameter: the statement is prepared as it is, and its generic plan folds
// exactly what planning the text directly folds. Constants that are part of the grammar stay and
// do not count: type modifiers and array bounds (numeric(10,2), "varchar"(10), int[3],
// current_timestamp(3)) and whole ORDER BY / GROUP BY / DISTINCT ON items (output column numbers).
// Equal literals share one parameter, and a literal text kept once is kept everywhere, so equal
// expressions stay equal. Literals shorter than their placeholder stay ($1 is two characters).
//
// Texts with a backslash inside a string are refused: how PostgreSQL reads them depends on
// standard_conforming_strings and backslash_quote, which the lexer does not know. Texts that call
// set_config are refused too (the proxy cannot tell what they change).
func Parameterize(sql string) (Parameterized, bool) {
	s, ok := scanStatement(sql, false)
	if !ok {
		return Parameterized{}, false
	}
	if s.risky {
		return Parameterized{Text: sql, Rows: s.rows}, true
	}
	p, ok := rewrite(sql, s.lits, s.kept)
	p.Rows = s.rows
	return p, ok
}

// PreparableWithParams reports whether a client's statement with $n parameters (the extended
// protocol's unnamed statement) may run as a statement prepared once per server connection with
// the same effect as the unnamed statement, which PostgreSQL always plans for the values at hand:
// by the rules of Parameterize, every $n stands where a literal would become a parameter, and no
// other constant stands where it could be folded. rows is Parameterized.Rows.
func PreparableWithParams(sql string) (rows, ok bool) {
	if len(sql) > maxParameterizeLen {
		return false, false
	}
	s, ok := scanStatement(sql, true)
	if !ok || s.risky {
		return false, false
	}
	return s.rows, true
}

// scanned is what scanStatement learned about a statement.
type scanned struct {
	lits  []literal       // numeric literals that may become parameters
	kept  map[string]bool // literal texts that stay
	risky bool            // a constant (or $n) stands where PostgreSQL could fold it
	rows  bool            // the statement may return rows
}

// position says whether a constant's left neighbours make it a parameter candidate; its right
// neighbour decides (see scanner.settle).
type position uint8

const (
	posOther position = iota // anywhere else: foldable
	posExpr                  // right-hand side of a comparison, a BETWEEN bound, LIMIT/OFFSET
	posItem                  // an item of an IN list or of an INSERT's VALUES row
)

// frame is one level of parentheses.
type frame struct {
	typmod   bool // a type modifier or array bounds: constants of the grammar
	keep     bool // literals here stay (ON CONFLICT inference, grouping sets)
	byList   bool // inside an ORDER BY / GROUP BY / PARTITION BY / DISTINCT ON list
	distinct bool // this frame is DISTINCT ON's parenthesised list
	conflict bool // after ON CONFLICT, up to DO
	set      bool // in an UPDATE's SET list (its '=' assigns; it does not compare)
	insert   bool // this level's statement is an INSERT
	values   bool // after an INSERT's VALUES, between its rows
	list     position
}

// pending is a constant or parameter whose right neighbour is not known yet.
type pending struct {
	kind    tokKind
	lit     literal
	pos     position
	ordinal bool // a candidate output-column number (whole ORDER BY / GROUP BY item)
	grammar bool // part of a type name
	keep    bool // stays even where it could be a parameter
}

func scanStatement(sql string, allowParams bool) (scanned, bool) {
	var s scanned
	if len(sql) > maxParameterizeLen {
		return s, false
	}
	var (
		frames  = []frame{{}}
		prev    token // the previous token
		prev2   token
		prev3   token
		typCtx  bool // the identifiers since the last :: or AS may be a type name
		bounds  bool // inside a type name's array bounds
		between int  // 1: after col BETWEEN [SYMMETRIC]; 2: after its first bound; 3: after its AND
		first   = true
		pend    *pending
		pendBuf pending
	)
	keep := func(text string) {
		if s.kept == nil {
			s.kept = map[string]bool{}
		}
		s.kept[text] = true
	}
	l := lexer{src: sql}
	for {
		tok := l.next()
		f := &frames[len(frames)-1]
		if pend != nil {
			s.settle(sql, pend, tok, keep)
			pend = nil
		}
		if first && tok.kind != tIdent {
			return s, false
		}
		if between == 2 && !(tok.kind == tIdent && strings.EqualFold(tok.text, "and")) {
			between = 0
		}
		switch tok.kind {
		case tEOF:
			if len(frames) != 1 || first {
				return s, false
			}
			return s, true
		case tBad:
			return s, false
		case tSemi:
			if l.next().kind != tEOF || len(frames) != 1 {
				return s, false
			}
			return s, true
		case tIdent:
			w := strings.ToLower(tok.text)
			if first {
				switch w {
				case "select", "values", "with":
					s.rows = true
				case "insert", "update", "delete":
				default:
					return s, false
				}
			}
			switch w {
			case "into":
				// SELECT ... INTO creates a table (a utility statement, which takes no parameters).
				if !(prev.kind == tIdent && strings.EqualFold(prev.text, "insert")) {
					return s, false
				}
			case "set_config":
				return s, false
			case "returning":
				s.rows = true
			case "insert":
				f.insert = true
			case "values":
				f.values = f.insert
			case "set":
				f.set = true
			case "where", "from":
				f.set = false
			case "by":
				if prev.kind == tIdent && (strings.EqualFold(prev.text, "order") || strings.EqualFold(prev.text, "group") ||
					strings.EqualFold(prev.text, "partition")) {
					f.byList = true
				}
			case "between":
				if columnLike(prev) {
					between = 1
				}
			case "and":
				if between == 2 {
					between = 3
				}
			}
			switch w {
			case "limit", "offset", "fetch", "having", "window", "for", "union", "intersect", "except", "returning", "range", "rows", "groups":
				f.byList = false
			case "conflict":
				f.conflict = true
			case "do":
				f.conflict = false
			case "as":
				typCtx = true
			}
			if w != "values" {
				f.values = false
			}
			if prev.kind == tLParen && f.list == posItem {
				f.list = posOther // (SELECT ...): a subquery, not a list
			}
			if between == 1 && w != "between" && w != "symmetric" {
				between = 0
			}
			if w != "as" && !(typCtx && (prev.kind == tIdent || prev.kind == tTypecast || prev.kind == tDot)) {
				typCtx = false
			}
		case tQIdent:
			// "numeric"(10,2), pg_catalog."varchar"(10): a quoted type name keeps the type context.
			if !(typCtx && (prev.kind == tTypecast || prev.kind == tDot || prev.kind == tIdent)) {
				typCtx = false
			}
		case tLParen:
			nf := frame{keep: f.keep || f.conflict || f.byList && !(prev.kind == tIdent && !isSortWord(prev.text))}
			switch prev.kind {
			case tIdent:
				if typCtx && !strings.EqualFold(prev.text, "as") && !strings.EqualFold(prev.text, "materialized") || isTypmodWord(prev.text) {
					nf.typmod = true
				}
				if strings.EqualFold(prev.text, "on") && prev2.kind == tIdent && strings.EqualFold(prev2.text, "distinct") {
					nf.byList, nf.distinct = true, true
				}
				if strings.EqualFold(prev.text, "in") && (columnLike(prev2) ||
					prev2.kind == tIdent && strings.EqualFold(prev2.text, "not") && columnLike(prev3)) {
					nf.list = posItem
				}
				if strings.EqualFold(prev.text, "values") && f.values {
					nf.list = posItem
				}
			case tQIdent:
				nf.typmod = typCtx
			case tComma:
				if f.values {
					nf.list = posItem // the next row
				}
			}
			frames = append(frames, nf)
			typCtx = false
		case tRParen:
			if len(frames) == 1 {
				return s, false
			}
			frames = frames[:len(frames)-1]
			typCtx = false
		case tNumber, tString, tParam:
			if tok.kind == tParam && !allowParams {
				return s, false
			}
			if tok.kind == tString && strings.IndexByte(tok.text, '\\') >= 0 {
				return s, false
			}
			end := l.pos
			pendBuf = pending{kind: tok.kind, lit: literal{end - len(tok.text), end}}
			pend = &pendBuf
			p := pend
			p.grammar = f.typmod || bounds
			if tok.kind == tNumber {
				p.ordinal = f.byList && (prev.kind == tComma || prev.kind == tIdent && (strings.EqualFold(prev.text, "by") ||
					(strings.EqualFold(prev.text, "all") || strings.EqualFold(prev.text, "distinct")) && prev2.kind == tIdent && strings.EqualFold(prev2.text, "by")) ||
					prev.kind == tLParen && f.distinct)
				p.keep = f.keep || f.conflict || len(tok.text) > maxParamLiteral
			}
			// A unary minus belongs to the constant: PostgreSQL folds it into the literal
			// (doNegate in gram.y), so the position is the minus sign's.
			l1, l2, l3 := prev, prev2, prev3
			if l1.kind == tOp && l1.text == "-" && l2.kind != tNumber && l2.kind != tString && l2.kind != tParam &&
				l2.kind != tRParen && l2.kind != tRBracket && !columnLike(l2) {
				if tok.kind == tNumber && literalType("-"+tok.text) != literalType(tok.text) {
					p.keep = true
				}
				l1, l2 = l2, l3
			}
			p.pos = leftPosition(l1, l2, f, between)
			if between == 1 {
				between = 2
			} else if between == 3 {
				between = 0
			}
			if !bounds && tok.kind == tNumber {
				typCtx = false
			}
		case tLBracket:
			// int[10]: array bounds in a type name are constants too.
			bounds = typCtx && (prev.kind == tIdent || prev.kind == tRBracket || prev.kind == tQIdent)
		case tRBracket:
			if !bounds {
				typCtx = false
			}
			bounds = false
		case tTypecast:
			typCtx = true
		case tDot:
			// schema.type keeps a type context going
		default:
			typCtx = false
		}
		switch tok.kind {
		case tIdent, tLParen, tRParen, tComma:
			// VALUES (...), (...): f is the enclosing level for all but tRParen, whose level is gone
		default:
			f.values = false
		}
		first = false
		prev3, prev2, prev = prev2, prev, tok
	}
}

// leftPosition classifies a constant by what precedes it (the minus sign's left neighbours when it
// is negated).
func leftPosition(l1, l2 token, f *frame, between int) position {
	switch l1.kind {
	case tOp:
		switch l1.text {
		case "=":
			if f.set {
				return posOther // an assignment: coerced to the column's type, foldable
			}
			fallthrough
		case "<>", "!=", "<", "<=", ">", ">=":
			if columnLike(l2) {
				return posExpr
			}
		}
	case tIdent:
		switch strings.ToLower(l1.text) {
		case "like", "ilike":
			if columnLike(l2) {
				return posExpr
			}
		case "limit", "offset":
			return posExpr
		case "between", "symmetric", "and":
			if between == 1 || between == 3 {
				return posExpr
			}
		}
	case tLParen, tComma:
		return f.list
	}
	return posOther
}

// settle decides a pending constant once its right neighbour is known.
func (s *scanned) settle(sql string, p *pending, next token, keep func(string)) {
	text := sql[p.lit.start:p.lit.end]
	whole := false // nothing after it binds it into a larger expression
	switch p.pos {
	case posExpr:
		whole = endsOperand(next)
	case posItem:
		whole = next.kind == tComma || next.kind == tRParen
	}
	switch {
	case p.grammar:
		if p.kind == tNumber {
			keep(text)
		} else {
			s.risky = true
		}
	case p.ordinal && endsSortItem(next):
		keep(text)
	case !whole:
		if p.kind == tNumber {
			keep(text)
		}
		s.risky = true
	case p.kind == tNumber && p.keep:
		keep(text)
	case p.kind == tNumber:
		s.lits = append(s.lits, p.lit)
	}
}

// columnLike reports whether a token can end a column reference (t.col, "Col", col): not a literal,
// a parenthesis or a keyword that could stand for a constant.
func columnLike(t token) bool {
	switch t.kind {
	case tQIdent:
		return true
	case tIdent:
		return t.kw == kwNone || t.kw == kwUnreserved
	}
	return false
}

// endsOperand reports whether a token ends a comparison's right-hand operand, so that the constant
// before it is the whole operand.
func endsOperand(t token) bool {
	switch t.kind {
	case tEOF, tSemi, tRParen, tComma:
		return true
	case tIdent:
		switch strings.ToLower(t.text) {
		case "and", "or", "then", "else", "end", "when", "order", "group", "limit", "offset", "fetch",
			"returning", "union", "intersect", "except", "window", "having", "for", "where", "from",
			"on", "using", "join", "inner", "left", "right", "full", "cross", "natural", "do":
			return true
		}
	}
	return false
}

// endsSortItem reports whether a token ends an ORDER BY / GROUP BY item.
func endsSortItem(t token) bool {
	if endsOperand(t) {
		return true
	}
	if t.kind == tIdent {
		switch strings.ToLower(t.text) {
		case "asc", "desc", "nulls":
			return true
		}
	}
	return false
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

// ChangesCatalog reports whether a text may change what PostgreSQL decides when it parses and
// plans other statements, in ways it does not re-decide for statements already prepared: DDL
// (CREATE, ALTER, DROP, COMMENT, GRANT, REVOKE, SECURITY LABEL, IMPORT, REINDEX, REASSIGN), DO,
// CALL, LOAD, and SELECT ... INTO. Text the lexer does not understand counts when it holds one of
// those words anywhere.
func ChangesCatalog(sql string) bool {
	l := lexer{src: sql}
	start := true
	var prev token
	for {
		tok := l.next()
		switch tok.kind {
		case tEOF:
			return false
		case tBad:
			return containsCatalogWord(sql)
		case tSemi:
			start = true
			prev = tok
			continue
		case tIdent:
			w := strings.ToLower(tok.text)
			if start {
				switch w {
				case "create", "alter", "drop", "comment", "grant", "revoke", "security", "import", "reindex",
					"reassign", "do", "call", "load":
					return true
				}
			}
			if w == "into" && !(prev.kind == tIdent && (strings.EqualFold(prev.text, "insert") || strings.EqualFold(prev.text, "merge"))) {
				return true
			}
		}
		start = false
		prev = tok
	}
}

// containsCatalogWord reports whether one of ChangesCatalog's words stands anywhere in the text as a
// word of its own.
func containsCatalogWord(sql string) bool {
	lower := strings.ToLower(sql)
	for _, w := range []string{"create", "alter", "drop", "comment", "grant", "revoke", "security", "import",
		"reindex", "reassign", "do", "call", "load", "into"} {
		for i := 0; ; {
			j := strings.Index(lower[i:], w)
			if j < 0 {
				break
			}
			j += i
			end := j + len(w)
			if (j == 0 || !isIdentCont(lower[j-1])) && (end == len(lower) || !isIdentCont(lower[end])) {
				return true
			}
			i = end
		}
	}
	return false
}
