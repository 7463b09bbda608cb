package classify

// This file is the fast path's lexer: a subset of PostgreSQL's scan.l
// (src/backend/parser/scan.l) that returns tBad for anything outside the
// subset (dollar quotes, E'' and U&'' strings, non-ASCII identifiers,
// numbers with exponents or underscores, ...), which sends the text to the
// real parser. It assumes standard_conforming_strings = on, as libpg_query
// does.

type tokKind uint8

const (
	tEOF tokKind = iota
	tBad
	tIdent    // unquoted identifier or keyword; text as written
	tQIdent   // "quoted identifier"; text without the quotes
	tString   // 'string'
	tNumber   // 123, 1.5
	tParam    // $1
	tOp       // operator; text as lexed
	tLParen   // (
	tRParen   // )
	tComma    // ,
	tSemi     // ;
	tDot      // .
	tLBracket // [
	tRBracket // ]
	tTypecast // ::
)

type token struct {
	kind tokKind
	kw   kwCategory // for tIdent: its keyword category
	text string
}

type lexer struct {
	src  string
	pos  int
	hint Route // merged hints of the comments passed so far
}

func isSpace(c byte) bool {
	// scan.l: space [ \t\n\r\f\v]
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isIdentStart(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || ('0' <= c && c <= '9') || c == '$'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isOpChar: scan.l op_chars [\~\!\@\#\^\&\|\`\?\+\-\*\/\%\<\>\=]
func isOpChar(c byte) bool {
	switch c {
	case '~', '!', '@', '#', '^', '&', '|', '`', '?', '+', '-', '*', '/', '%', '<', '>', '=':
		return true
	}
	return false
}

// skip passes white space and comments, collecting hints. It returns false
// on an unterminated block comment.
func (l *lexer) skip() bool {
	s := l.src
	for l.pos < len(s) {
		c := s[l.pos]
		switch {
		case isSpace(c):
			l.pos++
		case c == '-' && l.pos+1 < len(s) && s[l.pos+1] == '-':
			start := l.pos
			for l.pos < len(s) && s[l.pos] != '\n' && s[l.pos] != '\r' {
				l.pos++
			}
			l.comment(s[start:l.pos])
		case c == '/' && l.pos+1 < len(s) && s[l.pos+1] == '*':
			// Block comments nest.
			start := l.pos
			depth := 1
			i := l.pos + 2
			for depth > 0 {
				if i+1 >= len(s) {
					return false
				}
				switch {
				case s[i] == '/' && s[i+1] == '*':
					depth++
					i += 2
				case s[i] == '*' && s[i+1] == '/':
					depth--
					i += 2
				default:
					i++
				}
			}
			l.pos = i
			l.comment(s[start:i])
		default:
			return true
		}
	}
	return true
}

func (l *lexer) comment(text string) {
	if l.hint != RoutePrimary {
		l.hint = mergeHint(l.hint, commentHint(text))
	}
}

func (l *lexer) next() token {
	if !l.skip() {
		return token{kind: tBad}
	}
	s := l.src
	if l.pos >= len(s) {
		return token{kind: tEOF}
	}
	start := l.pos
	c := s[start]
	switch {
	case isIdentStart(c):
		i := start + 1
		for i < len(s) && isIdentCont(s[i]) {
			i++
		}
		l.pos = i
		if i-start > maxIdentLen || i < len(s) && (s[i] == '\'' || s[i] >= 0x80 ||
			// U&'...' and U&"..." are Unicode-escape literals.
			s[i] == '&' && i+1 < len(s) && (s[i+1] == '\'' || s[i+1] == '"')) {
			return token{kind: tBad}
		}
		return token{kind: tIdent, kw: keywordOf(s[start:i]), text: s[start:i]}
	case isDigit(c):
		i := start + 1
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i+1 < len(s) && s[i] == '.' && isDigit(s[i+1]) {
			i += 2
			for i < len(s) && isDigit(s[i]) {
				i++
			}
		}
		l.pos = i
		// Trailing junk, exponents, 1_000, 0x1F, "1." and "1..2" all go to
		// the real lexer.
		if i < len(s) && (isIdentCont(s[i]) || s[i] == '.' || s[i] >= 0x80) {
			return token{kind: tBad}
		}
		return token{kind: tNumber, text: s[start:i]}
	case c == '\'':
		i := start + 1
		for {
			if i >= len(s) {
				return token{kind: tBad}
			}
			if s[i] == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					i += 2
					continue
				}
				break
			}
			i++
		}
		l.pos = i + 1
		return token{kind: tString, text: s[start:l.pos]}
	case c == '"':
		i := start + 1
		for i < len(s) && s[i] != '"' {
			i++
		}
		// Unterminated, empty, "a""b" and over-long names go to the real lexer.
		if i >= len(s) || i == start+1 || i-start-1 > maxIdentLen ||
			(i+1 < len(s) && s[i+1] == '"') {
			return token{kind: tBad}
		}
		l.pos = i + 1
		return token{kind: tQIdent, text: s[start+1 : i]}
	case c == '$':
		i := start + 1
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		l.pos = i
		// "$", "$1a" and "parameter number too large" are errors.
		if i == start+1 || !isIconst(s[start+1:i]) || i < len(s) && (isIdentCont(s[i]) || s[i] >= 0x80) {
			return token{kind: tBad}
		}
		return token{kind: tParam, text: s[start:i]}
	case c == ':':
		if start+1 < len(s) && s[start+1] == ':' {
			l.pos = start + 2
			return token{kind: tTypecast}
		}
	case c == '.':
		if start+1 < len(s) && (isDigit(s[start+1]) || s[start+1] == '.') {
			return token{kind: tBad}
		}
		l.pos++
		return token{kind: tDot}
	case c == '(':
		l.pos++
		return token{kind: tLParen}
	case c == ')':
		l.pos++
		return token{kind: tRParen}
	case c == ',':
		l.pos++
		return token{kind: tComma}
	case c == ';':
		l.pos++
		return token{kind: tSemi}
	case c == '[':
		l.pos++
		return token{kind: tLBracket}
	case c == ']':
		l.pos++
		return token{kind: tRBracket}
	case isOpChar(c):
		return l.operator()
	}
	return token{kind: tBad}
}

// operator lexes an operator the way scan.l's {operator} rule does.
func (l *lexer) operator() token {
	s := l.src
	start := l.pos
	i := start
	// The operator stops where a comment starts.
	for i < len(s) && isOpChar(s[i]) {
		if i > start && i+1 < len(s) && ((s[i] == '-' && s[i+1] == '-') || (s[i] == '/' && s[i+1] == '*')) {
			break
		}
		i++
	}
	n := i - start
	// "For SQL compatibility, '+' and '-' cannot be the last char of a
	// multi-char operator unless the operator contains chars that are not
	// in SQL operators."
	if n > 1 && (s[start+n-1] == '+' || s[start+n-1] == '-') {
		ic := n - 2
		for ; ic >= 0; ic-- {
			switch s[start+ic] {
			case '~', '!', '@', '#', '^', '&', '|', '`', '?', '%':
			default:
				continue
			}
			break
		}
		if ic < 0 {
			for n > 1 && (s[start+n-1] == '+' || s[start+n-1] == '-') {
				n--
			}
		}
	}
	l.pos = start + n
	if n > maxIdentLen {
		// scan.l: "operator too long" (operator names are NAMEDATALEN-limited).
		return token{kind: tBad}
	}
	return token{kind: tOp, text: s[start : start+n]}
}
