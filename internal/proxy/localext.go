package proxy

import (
	"strings"

	"github.com/meridiandb/meridian/internal/classify"
)

// The proxy's own settings (SET/SHOW meridian.*) through the extended protocol, as pgx, JDBC and
// node-postgres send them: Parse, Bind, Describe, Execute and Sync are answered by the proxy, like the
// simple-protocol path in localQuery. A batch is answered here only when every statement in it is
// one of these; a batch that mixes them with real statements goes to the server, which rejects the
// unknown parameter.

// localStmt recognises SET/RESET meridian.x and SHOW meridian.x.
func (c *client) localStmt(sql string, res classify.Result) (show string, set *classify.SetOp, ok bool) {
	if res.Statements == 1 && len(res.Sets) == 1 && strings.HasPrefix(res.Sets[0].Name, "meridian.") {
		return "", &res.Sets[0], true
	}
	if mayBeLocal(sql) {
		if name, found := showMeridian(sql); found {
			return name, nil, true
		}
	}
	return "", nil, false
}

// maxLocalLen is the length above which a statement is looked at as one of the proxy's own
// settings only when its text names one ("meridian."): parsing a long text (a statement with
// thousands of parameters) costs far more than looking for the word.
const maxLocalLen = 4 << 10

// localOnlyBatch reports whether every message of the batch concerns the proxy's own settings.
func (c *client) localOnlyBatch() bool {
	if c.cur != nil || c.pinnedNode != "" {
		return false // a held server connection keeps the order of everything on it
	}
	any := false
	local := map[string]bool{} // statements parsed in this batch, by name, that are local
	isLocal := func(name string) bool {
		if l, seen := local[name]; seen {
			return l
		}
		ps := c.lookupStmt(name)
		return ps != nil && ps.local
	}
	portals := map[string]bool{}
	for _, it := range c.items {
		switch it.typ {
		case msgParse:
			if len(it.sql) > maxLocalLen && !containsFold(it.sql, "meridian") {
				return false // a long text that names no setting of the proxy's: not parsed twice
			}
			_, _, ok := c.localStmt(it.sql, c.p.classifier.ClassifyMemo(&c.memoGlobal, nil, it.sql))
			if !ok {
				return false
			}
			local[it.name], any = true, true
		case msgBind:
			if !isLocal(it.name) {
				return false
			}
			portals[it.portal], any = true, true
		case msgDescribe:
			if (it.kind == 'S' && !isLocal(it.name)) || (it.kind == 'P' && !portals[it.name]) {
				return false
			}
		case msgExecute:
			if !portals[it.name] {
				return false
			}
		case msgClose:
			if it.kind == 'S' && !isLocal(it.name) {
				return false
			}
		}
	}
	return any
}

// answerLocalBatch answers a batch of the proxy's own settings without a server.
func (c *client) answerLocalBatch() error {
	out := c.out[:0]
	portals := map[string]*prepStmt{}
	skipping := false
	for _, it := range c.items {
		if skipping && it.typ != msgSync {
			continue
		}
		switch it.typ {
		case msgParse:
			ps := &prepStmt{sql: it.sql, res: c.p.classifier.ClassifyMemo(&c.memoGlobal, nil, it.sql), local: true}
			if it.name == "" {
				c.unnamed = ps
			} else {
				if _, dup := c.stmts[it.name]; dup {
					out = appendError(out, newError(codeDuplicatePrepared, "prepared statement \"%s\" already exists", it.name))
					skipping = true
					continue
				}
				c.stmts[it.name] = ps
			}
			out = append(out, rawParseComplete...)
		case msgBind:
			portals[it.portal] = c.lookupStmt(it.name)
			out = append(out, rawBindComplete...)
		case msgDescribe:
			ps := portals[it.name]
			if it.kind == 'S' {
				ps = c.lookupStmt(it.name)
				out = append(out, msgParameterDescription, 0, 0, 0, 6, 0, 0)
			}
			if show, _, _ := c.localStmt(ps.sql, ps.res); show != "" {
				out = appendShowRowDescription(out, show)
			} else {
				out = append(out, msgNoData, 0, 0, 0, 4)
			}
		case msgExecute:
			ps := portals[it.name]
			show, set, _ := c.localStmt(ps.sql, ps.res)
			if show != "" {
				v, err := c.showLocal(show)
				if err != nil {
					out, skipping = appendError(out, toPgError(err)), true
					continue
				}
				out = appendCommandComplete(appendShowDataRow(out, v), "SHOW")
				continue
			}
			value, tag := set.Value, "SET"
			if set.Kind == classify.SetReset || set.Kind == classify.SetResetAll {
				value, tag = "", "RESET"
			}
			if err := c.setLocal(set.Name, value); err != nil {
				out, skipping = appendError(out, toPgError(err)), true
				continue
			}
			out = appendCommandComplete(out, tag)
		case msgClose:
			if it.kind == 'S' {
				c.forgetStmt(it.name)
			}
			out = append(out, rawCloseComplete...)
		case msgSync:
			skipping = false
			out = appendReadyForQuery(out, c.txStatus)
		}
	}
	c.out = out[:0]
	return c.reply(out)
}
