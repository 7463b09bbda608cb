package classify

import (
	"strings"
	"unicode/utf8"
)

// The fast path answers for the statements a proxy sees most — plain
// SELECTs, BEGIN, COMMIT, ROLLBACK, SHOW — without calling the real parser.
// It is a small recursive-descent parser for a strict subset of
// PostgreSQL's grammar (src/backend/parser/gram.y). Within that subset it
// accepts exactly what gram.y accepts, with the same operator precedences;
// anything else (a keyword it does not know, FOR, INTO, WITH, UNION, a
// subquery, a call of a write function, ...) makes it give up, and the text
// goes to the real parser. TestFastPathAgrees and FuzzClassify check that
// whenever it answers, the answer equals the real parser's.

type kwCategory uint8

const (
	kwNone         kwCategory = iota // a plain identifier
	kwUnreserved                     // UNRESERVED_KEYWORD: usable as any name
	kwColName                        // COL_NAME_KEYWORD
	kwTypeFuncName                   // TYPE_FUNC_NAME_KEYWORD
	kwReserved                       // RESERVED_KEYWORD
)

// keywordOf returns the keyword category of an unquoted identifier. The
// lexer only returns ASCII identifiers of at most maxIdentLen bytes.
func keywordOf(ident string) kwCategory {
	var buf [maxIdentLen]byte
	if len(ident) > len(buf) {
		return kwNone
	}
	n := copy(buf[:], ident)
	for i := range n {
		if c := buf[i]; 'A' <= c && c <= 'Z' {
			buf[i] = c + 'a' - 'A'
		}
	}
	return keywords[string(buf[:n])]
}

// Operator precedence levels, lowest first, from gram.y's %left/%right/
// %nonassoc declarations. Levels the fast path never parses are left out.
const (
	precOr     = 1 + iota // OR
	precAnd               // AND
	precNot               // NOT (prefix)
	precIs                // IS ... (postfix), nonassoc
	precCmp               // < > = <= >= <>, nonassoc
	precLike              // IN, LIKE, ILIKE, NOT_LA, nonassoc
	precOp                // Op: every other operator
	precAdd               // + -
	precMul               // * / %
	precExp               // ^
	precUminus            // prefix + -
)

type infixKind uint8

const (
	infixNone     infixKind = iota // not an infix operator: the expression ends here
	infixBad                       // give up
	infixLeft                      // left-associative binary operator
	infixNonassoc                  // non-associative binary operator
	infixIs                        // IS [NOT] NULL/TRUE/FALSE/UNKNOWN
	infixIn                        // [NOT] IN (list)
)

// maxExprDepth bounds the nesting of expressions the fast path parses
// (deeper ones go to the real parser, which has its own stack limit).
const maxExprDepth = 50

type fastParser struct {
	depth     int // expression nesting
	lx        lexer
	cur, next token // current token and one token of look-ahead
	fs        *funcSet
	inGroupBy bool // calls of cube() and rollup() mean something else there
}

// classifyFast classifies sql if it is in the fast path's subset.
func classifyFast(sql string, fs *funcSet) (Result, bool) {
	// Invalid UTF-8 makes pg_query fail; NUL is never inside a Query
	// message's text. Leave both to the slow path.
	if !utf8.ValidString(sql) || strings.IndexByte(sql, 0) >= 0 {
		return Result{}, false
	}
	p := fastParser{lx: lexer{src: sql}, fs: fs}
	p.cur = p.lx.next()
	p.next = p.lx.next()
	r, ok := p.statement()
	if !ok {
		return Result{}, false
	}
	return finish(r, p.lx.hint), true
}

func (p *fastParser) advance() {
	p.cur = p.next
	if p.next.kind != tEOF && p.next.kind != tBad {
		p.next = p.lx.next()
	}
}

func equalFold(ident, lower string) bool {
	return len(ident) == len(lower) && hasPrefixFold(ident, lower)
}

// isKw reports whether t is the (unquoted) keyword kw, given in lower case.
func isKw(t token, kw string) bool {
	return t.kind == tIdent && equalFold(t.text, kw)
}

func (p *fastParser) at(kw string) bool { return isKw(p.cur, kw) }

// accept consumes the keyword kw if it is the current token.
func (p *fastParser) accept(kw string) bool {
	if p.at(kw) {
		p.advance()
		return true
	}
	return false
}

func (p *fastParser) acceptKind(k tokKind) bool {
	if p.cur.kind == k {
		p.advance()
		return true
	}
	return false
}

// end accepts an optional ';' and then the end of the text.
func (p *fastParser) end() bool {
	p.acceptKind(tSemi)
	return p.cur.kind == tEOF
}

func (p *fastParser) statement() (Result, bool) {
	switch {
	case p.cur.kind == tEOF:
		return Result{Route: RouteReplica}, true
	case p.at("select"):
		if p.selectStmt() && p.end() {
			return Result{Route: RouteReplica, Statements: 1}, true
		}
	case p.at("begin"), p.at("start"):
		return p.begin()
	case p.at("commit"), p.at("end"):
		p.advance()
		_ = p.accept("work") || p.accept("transaction")
		if p.end() {
			return Result{Route: RoutePrimary, Reason: "COMMIT", Txn: TxnCommit, Statements: 1}, true
		}
	case p.at("rollback"), p.at("abort"):
		p.advance()
		_ = p.accept("work") || p.accept("transaction")
		if p.end() {
			return Result{Route: RoutePrimary, Reason: "ROLLBACK", Txn: TxnRollback, Statements: 1}, true
		}
	case p.at("show"):
		p.advance()
		if p.showName() && p.end() {
			return Result{Route: RouteReplica, Statements: 1}, true
		}
	case p.at("insert"):
		if p.insertStmt() && p.end() {
			return Result{Route: RoutePrimary, Reason: "INSERT", Statements: 1}, true
		}
	case p.at("update"):
		if p.updateStmt() && p.end() {
			return Result{Route: RoutePrimary, Reason: "UPDATE", Statements: 1}, true
		}
	case p.at("delete"):
		if p.deleteStmt() && p.end() {
			return Result{Route: RoutePrimary, Reason: "DELETE", Statements: 1}, true
		}
	}
	return Result{}, false
}

// The plain data-modifying statements of OLTP traffic, sent with literals inlined by the simple query
// protocol (so each text is new and the parser's cache cannot help). Anything beyond the shapes
// below (RETURNING, ON CONFLICT, FROM, USING, sub-selects, DEFAULT, ...) is left to the parser.

// insertStmt parses INSERT INTO qualified_name [(column [, ...])] VALUES (expr [, ...]) [, (...)].
func (p *fastParser) insertStmt() bool {
	p.advance() // INSERT
	if !p.accept("into") || !p.qualifiedName() {
		return false
	}
	if p.acceptKind(tLParen) {
		if !p.list(p.columnName) || !p.acceptKind(tRParen) {
			return false
		}
	}
	if !p.accept("values") {
		return false
	}
	return p.list(func() bool {
		return p.acceptKind(tLParen) && p.list(p.expr0) && p.acceptKind(tRParen)
	})
}

// updateStmt parses UPDATE qualified_name [AS alias] SET column = expr [, ...] [WHERE expr].
func (p *fastParser) updateStmt() bool {
	p.advance() // UPDATE
	if !p.qualifiedName() || !p.optAsAlias() || !p.accept("set") {
		return false
	}
	if !p.list(func() bool { return p.columnName() && p.cur.kind == tOp && p.cur.text == "=" && p.skip() && p.expr(0) }) {
		return false
	}
	return !p.accept("where") || p.expr(0)
}

// deleteStmt parses DELETE FROM qualified_name [AS alias] [WHERE expr].
func (p *fastParser) deleteStmt() bool {
	p.advance() // DELETE
	if !p.accept("from") || !p.qualifiedName() || !p.optAsAlias() {
		return false
	}
	return !p.accept("where") || p.expr(0)
}

// qualifiedName parses a table name: ColId [. attr_name [. attr_name]].
func (p *fastParser) qualifiedName() bool {
	if !p.colID() {
		return false
	}
	p.advance()
	for parts := 1; p.cur.kind == tDot; parts++ {
		p.advance()
		if parts == 3 || !p.label() {
			return false
		}
		p.advance()
	}
	return true
}

// optAsAlias accepts AS ColId (an alias without AS is left to the parser: it is ambiguous with SET).
func (p *fastParser) optAsAlias() bool {
	if !p.accept("as") {
		return true
	}
	if !p.colID() {
		return false
	}
	p.advance()
	return true
}

// columnName accepts a plain column name (ColId).
func (p *fastParser) columnName() bool {
	if !p.colID() {
		return false
	}
	p.advance()
	return true
}

// skip consumes the current token; it returns true for use in conditions.
func (p *fastParser) skip() bool {
	p.advance()
	return true
}

// begin parses BEGIN [WORK | TRANSACTION] [modes] and START TRANSACTION
// [modes]. The last READ ONLY / READ WRITE wins, as in PostgreSQL, which
// applies the modes in order.
func (p *fastParser) begin() (Result, bool) {
	if p.accept("start") {
		if !p.accept("transaction") {
			return Result{}, false
		}
	} else {
		p.advance() // BEGIN
		_ = p.accept("work") || p.accept("transaction")
	}
	var modes TxnMode
	// Modes are separated by commas or just by white space.
	for p.txnModeStart() {
		if !p.txnMode(&modes) || (p.acceptKind(tComma) && !p.txnModeStart()) {
			return Result{}, false
		}
	}
	if !p.end() {
		return Result{}, false
	}
	if readOnlyModes(modes) {
		return Result{Route: RouteReplica, Txn: TxnBeginReadOnly, Modes: modes, Statements: 1}, true
	}
	return Result{Route: RoutePrimary, Reason: "BEGIN", Txn: TxnBegin, Modes: modes, Statements: 1}, true
}

func (p *fastParser) txnModeStart() bool {
	return p.at("isolation") || p.at("read") || p.at("deferrable") || p.at("not")
}

func (p *fastParser) txnMode(m *TxnMode) bool {
	switch {
	case p.accept("isolation"):
		if !p.accept("level") {
			return false
		}
		*m &^= ModeSerializable | ModeIsolation
		switch {
		case p.accept("serializable"):
			*m |= ModeSerializable // a hot standby cannot run it: never a replica transaction
			return true
		case p.accept("repeatable"):
			*m |= ModeIsolation
			return p.accept("read")
		case p.accept("read"):
			*m |= ModeIsolation
			return p.accept("committed") || p.accept("uncommitted")
		}
		return false
	case p.accept("read"):
		*m &^= ModeReadOnly | ModeReadWrite
		switch {
		case p.accept("only"):
			*m |= ModeReadOnly
			return true
		case p.accept("write"):
			*m |= ModeReadWrite
			return true
		}
		return false
	case p.accept("deferrable"):
		return true
	case p.accept("not"):
		return p.accept("deferrable")
	}
	return false
}

// selectStmt parses
//
//	SELECT [ALL | DISTINCT] target [, ...] [FROM from_item [, ...]]
//	  [WHERE expr] [GROUP BY expr [, ...]] [HAVING expr]
//	  [ORDER BY expr [ASC | DESC] [NULLS {FIRST | LAST}] [, ...]]
//	  [LIMIT {expr | ALL}] [OFFSET expr]  (LIMIT and OFFSET in either order)
func (p *fastParser) selectStmt() bool {
	p.advance() // SELECT
	if p.accept("distinct") {
		if p.at("on") {
			return false
		}
	} else {
		p.accept("all")
	}
	if !p.list(p.target) {
		return false
	}
	if p.accept("from") && !p.list(p.fromItem) {
		return false
	}
	if p.accept("where") && !p.expr(0) {
		return false
	}
	if p.accept("group") {
		p.inGroupBy = true
		if !p.accept("by") || !p.list(p.expr0) {
			return false
		}
		p.inGroupBy = false
	}
	if p.accept("having") && !p.expr(0) {
		return false
	}
	if p.accept("order") {
		if !p.accept("by") || !p.list(p.sortItem) {
			return false
		}
	}
	var limit, offset bool
	for {
		switch {
		case !limit && p.accept("limit"):
			limit = true
			if !p.accept("all") && !p.expr(0) {
				return false
			}
		case !offset && p.accept("offset"):
			offset = true
			if !p.expr(0) {
				return false
			}
		default:
			return true
		}
	}
}

// list parses item [, item ...].
func (p *fastParser) list(item func() bool) bool {
	for {
		if !item() {
			return false
		}
		if !p.acceptKind(tComma) {
			return true
		}
	}
}

func (p *fastParser) expr0() bool { return p.expr(0) }

// target parses * | expr [[AS] label].
func (p *fastParser) target() bool {
	if p.cur.kind == tOp && p.cur.text == "*" {
		p.advance()
		return true
	}
	if !p.expr(0) {
		return false
	}
	if p.accept("as") {
		if !p.label() {
			return false
		}
		p.advance()
		return true
	}
	// A bare label; keywords (even those gram.y allows here) are left to
	// the real parser.
	if p.cur.kind == tQIdent || (p.cur.kind == tIdent && p.cur.kw == kwNone) {
		p.advance()
	}
	return true
}

func (p *fastParser) sortItem() bool {
	if !p.expr(0) {
		return false
	}
	_ = p.accept("asc") || p.accept("desc")
	if p.accept("nulls") {
		return p.accept("first") || p.accept("last")
	}
	return true
}

// fromItem parses table_ref [join ...] where a join is
// [INNER | {LEFT | RIGHT | FULL} [OUTER]] JOIN table_ref ON expr or
// CROSS JOIN table_ref.
func (p *fastParser) fromItem() bool {
	if !p.tableRef() {
		return false
	}
	for {
		switch {
		case p.accept("cross"):
			if !p.accept("join") || !p.tableRef() {
				return false
			}
		case p.at("join"), p.at("inner"), p.at("left"), p.at("right"), p.at("full"):
			if p.accept("left") || p.accept("right") || p.accept("full") {
				p.accept("outer")
			} else {
				p.accept("inner")
			}
			if !p.accept("join") || !p.tableRef() || !p.accept("on") || !p.expr(0) {
				return false
			}
		default:
			return true
		}
	}
}

// tableRef parses a table or function name with an optional alias.
func (p *fastParser) tableRef() bool {
	if !p.colID() {
		return false
	}
	last := p.cur.text
	p.advance()
	for parts := 1; p.cur.kind == tDot; parts++ {
		p.advance()
		if parts == 3 || !p.label() {
			// gram.y: "improper qualified name (too many dotted names)".
			return false
		}
		last = p.cur.text
		p.advance()
	}
	if p.cur.kind == tLParen && !p.callArgs(last) {
		return false
	}
	if p.fs.mayMatchView(last) {
		return false
	}
	if p.accept("as") {
		if !p.colID() {
			return false
		}
		p.advance()
	} else if p.cur.kind == tQIdent || (p.cur.kind == tIdent && p.cur.kw == kwNone) {
		p.advance()
	}
	return true
}

// label reports whether the current token is an attribute name or a
// column label (gram.y's attr_name and ColLabel: any identifier or
// keyword). NOT, NULLS, WITH, WITHOUT and FORMAT are left out: the lexer
// turns them into NOT_LA, NULLS_LA, ... depending on the next token, and
// those are not labels.
func (p *fastParser) label() bool {
	switch p.cur.kind {
	case tQIdent:
		return true
	case tIdent:
		switch {
		case isKw(p.cur, "not"), isKw(p.cur, "nulls"), isKw(p.cur, "with"),
			isKw(p.cur, "without"), isKw(p.cur, "format"):
			return false
		}
		return true
	}
	return false
}

// colID reports whether the current token may start a name: an
// identifier, a quoted identifier or an unreserved keyword (gram.y's ColId
// also admits column-name keywords; the fast path leaves those alone).
func (p *fastParser) colID() bool {
	switch p.cur.kind {
	case tQIdent:
		return true
	case tIdent:
		k := p.cur.kw
		return k == kwNone || k == kwUnreserved
	}
	return false
}

// showName parses SHOW's var_name: ColId [. ColId ...] (at most three
// parts here).
func (p *fastParser) showName() bool {
	for parts := 1; ; parts++ {
		if parts > 3 || !p.colID() {
			return false
		}
		p.advance()
		if !p.acceptKind(tDot) {
			return true
		}
	}
}

// callArgs parses a function call's argument list, name being the
// function's unqualified name; it gives up on functions that may write.
func (p *fastParser) callArgs(name string) bool {
	if p.fs.mayMatch(name) {
		return false
	}
	if p.inGroupBy && (equalFold(name, "cube") || equalFold(name, "rollup")) {
		return false
	}
	p.advance() // (
	switch {
	case p.acceptKind(tRParen):
		return true
	case p.cur.kind == tOp && p.cur.text == "*":
		p.advance()
		return p.acceptKind(tRParen)
	}
	return p.list(p.expr0) && p.acceptKind(tRParen)
}

// expr parses an expression whose operators all bind at least as tightly
// as minPrec (precedence climbing, equivalent to gram.y's yacc precedence
// resolution for the operators handled here).
func (p *fastParser) expr(minPrec int) bool {
	if p.depth >= maxExprDepth {
		return false
	}
	p.depth++
	ok := p.climb(minPrec)
	p.depth--
	return ok
}

func (p *fastParser) climb(minPrec int) bool {
	if !p.prefix() {
		return false
	}
	for {
		prec, kind := p.infix()
		switch {
		case kind == infixBad:
			return false
		case kind == infixNone || prec < minPrec:
			return true
		}
		switch kind {
		case infixIs:
			p.advance() // IS
			p.accept("not")
			if !(p.accept("null") || p.accept("true") || p.accept("false") || p.accept("unknown")) {
				return false
			}
		case infixIn:
			p.accept("not")
			p.advance() // IN
			if !p.acceptKind(tLParen) || !p.list(p.expr0) || !p.acceptKind(tRParen) {
				return false
			}
		default:
			if p.at("not") {
				p.advance()
			}
			p.advance() // the operator
			if !p.expr(prec + 1) {
				return false
			}
			if kind == infixNonassoc {
				// yacc reports a syntax error when a non-associative
				// operator is followed by another of the same level.
				if next, k := p.infix(); k != infixNone && next == prec {
					return false
				}
			}
		}
	}
}

// infix classifies the current token as an infix or postfix operator.
func (p *fastParser) infix() (int, infixKind) {
	t := p.cur
	switch t.kind {
	case tOp:
		switch t.text {
		case "+", "-":
			return precAdd, infixLeft
		case "*", "/", "%":
			return precMul, infixLeft
		case "^":
			return precExp, infixLeft
		case "<", ">", "=", "<=", ">=", "<>", "!=":
			return precCmp, infixNonassoc
		case "=>":
			// EQUALS_GREATER: named arguments only.
			return 0, infixBad
		}
		return precOp, infixLeft
	case tIdent:
		switch {
		case isKw(t, "and"):
			return precAnd, infixLeft
		case isKw(t, "or"):
			return precOr, infixLeft
		case isKw(t, "is"):
			return precIs, infixIs
		case isKw(t, "in"):
			return precLike, infixIn
		case isKw(t, "like"), isKw(t, "ilike"):
			return precLike, infixNonassoc
		case isKw(t, "not"):
			// NOT before IN/LIKE/ILIKE is the lexer's NOT_LA token.
			switch {
			case isKw(p.next, "in"):
				return precLike, infixIn
			case isKw(p.next, "like"), isKw(p.next, "ilike"):
				return precLike, infixNonassoc
			}
			return 0, infixBad
		case t.kw != kwNone:
			// BETWEEN, SIMILAR, ISNULL, COLLATE, AT, ESCAPE, OVER, a clause
			// keyword ...: let the caller decide.
			return 0, infixNone
		}
	}
	return 0, infixNone
}

// prefix parses a primary expression with its prefix operators and
// postfix casts.
func (p *fastParser) prefix() bool {
	t := p.cur
	switch t.kind {
	case tNumber, tString, tParam:
		p.advance()
		return p.postfix()
	case tOp:
		if t.text != "+" && t.text != "-" {
			return false
		}
		p.advance()
		return p.expr(precUminus)
	case tLParen:
		p.advance()
		return p.expr(0) && p.acceptKind(tRParen) && p.postfix()
	case tQIdent:
		return p.name()
	case tIdent:
		switch t.kw {
		case kwNone, kwUnreserved:
			return p.name()
		case kwReserved:
			switch {
			case isKw(t, "true"), isKw(t, "false"), isKw(t, "null"),
				isKw(t, "current_date"), isKw(t, "current_user"), isKw(t, "session_user"), isKw(t, "current_role"),
				isKw(t, "user"), isKw(t, "current_catalog"):
				p.advance()
				return p.postfix()
			case isKw(t, "current_timestamp"), isKw(t, "current_time"), isKw(t, "localtimestamp"), isKw(t, "localtime"):
				// gram.y's SQLValueFunction, with an optional precision: not a function call.
				p.advance()
				if p.cur.kind == tLParen {
					p.advance()
					if p.cur.kind != tNumber || !isIconst(p.cur.text) {
						return false
					}
					p.advance()
					if !p.acceptKind(tRParen) {
						return false
					}
				}
				return p.postfix()
			case isKw(t, "not"):
				if isKw(p.next, "in") || isKw(p.next, "like") || isKw(p.next, "ilike") ||
					isKw(p.next, "between") || isKw(p.next, "similar") {
					return false
				}
				p.advance()
				return p.expr(precNot)
			}
		}
	}
	return false
}

// name parses a column reference (t.*, too) or a function call.
func (p *fastParser) name() bool {
	last := p.cur.text
	p.advance()
	for parts := 1; p.cur.kind == tDot; parts++ {
		p.advance()
		switch {
		case parts == 3:
			return false
		case p.label():
			last = p.cur.text
			p.advance()
		case p.cur.kind == tOp && p.cur.text == "*":
			p.advance()
			// '*' must be last (gram.y makeColumnRef: improper use of "*").
			if p.cur.kind == tDot || p.cur.kind == tLParen {
				return false
			}
			return p.postfix()
		default:
			return false
		}
	}
	switch p.cur.kind {
	case tLParen:
		if !p.callArgs(last) {
			return false
		}
	case tString:
		// type 'literal'
		return false
	}
	return p.postfix()
}

// postfix parses any number of ::type casts.
func (p *fastParser) postfix() bool {
	for p.acceptKind(tTypecast) {
		if !p.typeName() {
			return false
		}
	}
	return true
}

// typeName parses a type name: a generic (possibly qualified) name with
// numeric modifiers, a few SQL-standard numeric and character types, and
// array brackets.
func (p *fastParser) typeName() bool {
	t := p.cur
	switch {
	case t.kind == tQIdent || (t.kind == tIdent && (t.kw == kwNone || t.kw == kwUnreserved)):
		p.advance()
		if p.acceptKind(tDot) {
			if !p.label() {
				return false
			}
			p.advance()
		}
		if p.cur.kind == tLParen && !p.typeMods(0, false) {
			return false
		}
	case isKw(t, "int"), isKw(t, "integer"), isKw(t, "smallint"), isKw(t, "bigint"),
		isKw(t, "real"), isKw(t, "boolean"):
		p.advance()
	case isKw(t, "numeric"), isKw(t, "decimal"), isKw(t, "dec"):
		p.advance()
		if p.cur.kind == tLParen && !p.typeMods(2, false) {
			return false
		}
	case isKw(t, "varchar"):
		p.advance()
		if p.cur.kind == tLParen && !p.typeMods(1, true) {
			return false
		}
	default:
		return false
	}
	for p.acceptKind(tLBracket) {
		if p.cur.kind == tNumber {
			if !isIconst(p.cur.text) {
				return false
			}
			p.advance()
		}
		if !p.acceptKind(tRBracket) {
			return false
		}
	}
	return true
}

// typeMods parses (n [, n ...]) with at most max numbers (0: no limit);
// iconst requires gram.y's Iconst (an integer that fits in int32).
func (p *fastParser) typeMods(max int, iconst bool) bool {
	p.advance() // (
	for n := 1; ; n++ {
		if (max > 0 && n > max) || p.cur.kind != tNumber || (iconst && !isIconst(p.cur.text)) {
			return false
		}
		p.advance()
		if p.acceptKind(tRParen) {
			return true
		}
		if !p.acceptKind(tComma) {
			return false
		}
	}
}

// isIconst reports whether a number token is an ICONST: the lexer makes
// integers that overflow int32 into FCONST (scan.l process_integer_literal).
func isIconst(num string) bool {
	v := 0
	for i := 0; i < len(num); i++ {
		c := num[i]
		if !isDigit(c) {
			return false
		}
		v = v*10 + int(c-'0')
		if v > 1<<31-1 {
			return false
		}
	}
	return true
}
