package classify

// hintPrefix introduces a routing hint inside a comment:
// /* meridian:primary */, -- meridian:replica.
const hintPrefix = "meridian:"

// commentHint returns the hint in one comment's text (delimiters included),
// matched without regard to case and only as whole words; a primary hint
// wins over a replica hint.
func commentHint(text string) Route {
	var h Route
	for i := 0; i+len(hintPrefix) <= len(text); i++ {
		if !hasPrefixFold(text[i:], hintPrefix) || (i > 0 && isWordByte(text[i-1])) {
			continue
		}
		rest := text[i+len(hintPrefix):]
		switch {
		case hasWordFold(rest, "primary"):
			return RoutePrimary
		case hasWordFold(rest, "replica"):
			h = RouteReplica
		}
	}
	return h
}

// mergeHint combines the hints of two comments: primary wins.
func mergeHint(a, b Route) Route {
	if a == RoutePrimary || b == RoutePrimary {
		return RoutePrimary
	}
	if a == RouteReplica || b == RouteReplica {
		return RouteReplica
	}
	return RouteNone
}

// mayHaveHint is a cheap test for texts that cannot contain a hint.
func mayHaveHint(sql string) bool {
	for i := 0; i+len(hintPrefix) <= len(sql); i++ {
		if (sql[i] == 'm' || sql[i] == 'M') && hasPrefixFold(sql[i:], hintPrefix) {
			return true
		}
	}
	return false
}

func hasWordFold(s, word string) bool {
	return hasPrefixFold(s, word) && (len(s) == len(word) || !isWordByte(s[len(word)]))
}

// hasPrefixFold reports whether s starts with prefix, ignoring ASCII case;
// prefix must be lower case.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func isWordByte(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}
