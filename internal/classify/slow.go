package classify

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The slow path: PostgreSQL's own grammar through libpg_query, then a walk
// over the whole parse tree. It is the reference the fast path is tested
// against.

// cursorOptHold is CURSOR_OPT_HOLD from src/include/nodes/parsenodes.h.
const cursorOptHold = 0x0020

const reasonParseError = "parse error"

// classifySlow classifies sql with the real parser.
func classifySlow(sql string, fs *funcSet) Result {
	// libpg_query takes a C string: text after a NUL would be ignored, and
	// a Query message cannot carry one anyway.
	if strings.IndexByte(sql, 0) >= 0 {
		return Result{Route: RoutePrimary, Reason: reasonParseError}
	}
	var hint Route
	if mayHaveHint(sql) {
		hint = scanHint(sql)
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		if r, ok := meridianSet(sql); ok {
			return finish(r, hint)
		}
		// Let the primary produce the real error message.
		return finish(Result{Route: RoutePrimary, Reason: reasonParseError}, hint)
	}
	r := Result{Route: RouteReplica, Statements: len(tree.Stmts)}
	sawTxn := false
	for _, raw := range tree.Stmts {
		s := stmtClassifier{fs: fs, sql: sql, raw: raw}
		s.statement(raw.Stmt)
		if s.reason != "" && r.Route != RoutePrimary {
			r.Route, r.Reason = RoutePrimary, s.reason
		}
		if s.txn != TxnNone {
			r.Txn = s.txn
			sawTxn = true
		}
		r.Pin |= s.pin
		r.Sets = append(r.Sets, s.sets...)
		r.Discard = r.Discard || s.discard
		r.CopyIn = r.CopyIn || s.copyIn
	}
	// A transaction-control statement among others: the proxy cannot split
	// the text, so it goes to the primary whole.
	if len(tree.Stmts) > 1 && sawTxn && r.Route != RoutePrimary {
		r.Route, r.Reason = RoutePrimary, "multiple statements"
	}
	return finish(r, hint)
}

// scanHint finds routing hints in the comments the real lexer sees.
func scanHint(sql string) Route {
	res, err := pg_query.Scan(sql)
	if err != nil {
		return RouteNone
	}
	var h Route
	for _, t := range res.Tokens {
		if t.Token != pg_query.Token_C_COMMENT && t.Token != pg_query.Token_SQL_COMMENT {
			continue
		}
		if t.Start < 0 || t.End > int32(len(sql)) || t.Start > t.End {
			continue
		}
		h = mergeHint(h, commentHint(sql[t.Start:t.End]))
	}
	return h
}

// stmtClassifier classifies one statement.
type stmtClassifier struct {
	fs  *funcSet
	sql string
	raw *pg_query.RawStmt

	reason  string // why the statement needs the primary; "" for a read
	txn     TxnOp
	pin     Pin
	sets    []SetOp
	discard bool
	copyIn  bool
}

// need records that the statement needs the primary; the first reason
// found is kept.
func (s *stmtClassifier) need(reason string) {
	if s.reason == "" {
		s.reason = reason
	}
}

// text is the statement's own source text.
func (s *stmtClassifier) text() string {
	loc, n := int(s.raw.StmtLocation), int(s.raw.StmtLen)
	if loc < 0 || loc > len(s.sql) {
		return strings.TrimSpace(s.sql)
	}
	end := len(s.sql)
	if n > 0 && loc+n <= len(s.sql) {
		end = loc + n
	}
	return strings.TrimSpace(s.sql[loc:end])
}

func (s *stmtClassifier) statement(n *pg_query.Node) {
	if n == nil {
		return
	}
	switch st := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		s.walk(st.SelectStmt, true)
	case *pg_query.Node_InsertStmt:
		s.need("INSERT")
		s.walk(st.InsertStmt, true)
	case *pg_query.Node_UpdateStmt:
		s.need("UPDATE")
		s.walk(st.UpdateStmt, true)
	case *pg_query.Node_DeleteStmt:
		s.need("DELETE")
		s.walk(st.DeleteStmt, true)
	case *pg_query.Node_MergeStmt:
		s.need("MERGE")
		s.walk(st.MergeStmt, true)

	case *pg_query.Node_TransactionStmt:
		s.transaction(st.TransactionStmt)
	case *pg_query.Node_VariableSetStmt:
		s.set(st.VariableSetStmt)
	case *pg_query.Node_VariableShowStmt:
		// A read, SHOW meridian.* included: the proxy answers those itself.

	case *pg_query.Node_ExplainStmt:
		s.explain(st.ExplainStmt)
	case *pg_query.Node_CopyStmt:
		c := st.CopyStmt
		switch {
		case c.IsFrom:
			s.need("COPY FROM")
			s.copyIn = c.Filename == "" && !c.IsProgram
		case c.IsProgram:
			s.need("COPY TO PROGRAM")
		case c.Filename != "":
			// A server-side file: written on the primary's host, where
			// users expect "the database server" to be.
			s.need("COPY TO file")
		}
		if c.Query != nil {
			s.statement(c.Query)
		}
	case *pg_query.Node_DeclareCursorStmt:
		d := st.DeclareCursorStmt
		if d.Options&cursorOptHold != 0 {
			s.pin |= PinHoldCursor
		}
		s.statement(d.Query)
	case *pg_query.Node_FetchStmt, *pg_query.Node_ClosePortalStmt:
		// FETCH, MOVE and CLOSE follow the cursor's server: inside a
		// transaction its server, outside one a WITH HOLD cursor, which
		// pinned the session.

	case *pg_query.Node_PrepareStmt:
		s.need("PREPARE")
		s.pin |= PinPrepare
	case *pg_query.Node_ExecuteStmt:
		// We cannot know what the prepared statement does.
		s.need("EXECUTE")
		s.walk(st.ExecuteStmt, true)
	case *pg_query.Node_DeallocateStmt:
		s.need("DEALLOCATE")
		s.discard = st.DeallocateStmt.Isall
	case *pg_query.Node_DiscardStmt:
		s.need("DISCARD")
		s.discard = st.DiscardStmt.Target == pg_query.DiscardMode_DISCARD_ALL
		if s.discard {
			// DISCARD ALL includes RESET ALL (and SET SESSION AUTHORIZATION DEFAULT).
			s.sets = append(s.sets, SetOp{Kind: SetResetAll, Stmt: s.text()})
		}

	case *pg_query.Node_ListenStmt:
		s.need("LISTEN")
		s.pin |= PinListen
	case *pg_query.Node_UnlistenStmt:
		s.need("UNLISTEN")
	case *pg_query.Node_NotifyStmt:
		s.need("NOTIFY")
	case *pg_query.Node_LockStmt:
		s.need("LOCK")
	case *pg_query.Node_CallStmt:
		s.need("CALL")
		s.walk(st.CallStmt, true)
	case *pg_query.Node_DoStmt:
		s.need("DO")
	case *pg_query.Node_ConstraintsSetStmt:
		s.need("SET CONSTRAINTS")

	case *pg_query.Node_VacuumStmt:
		if st.VacuumStmt.IsVacuumcmd {
			s.need("VACUUM")
		} else {
			s.need("ANALYZE")
		}
	case *pg_query.Node_CheckPointStmt:
		s.need("CHECKPOINT")
	case *pg_query.Node_ClusterStmt:
		s.need("CLUSTER")
	case *pg_query.Node_ReindexStmt:
		s.need("REINDEX")
	case *pg_query.Node_RefreshMatViewStmt:
		s.need("REFRESH MATERIALIZED VIEW")
	case *pg_query.Node_TruncateStmt:
		s.need("TRUNCATE")
	case *pg_query.Node_LoadStmt:
		s.need("LOAD")

	case *pg_query.Node_CreateStmt:
		c := st.CreateStmt
		s.createRel(c.Relation, c.Oncommit)
	case *pg_query.Node_CreateSeqStmt:
		s.createRel(st.CreateSeqStmt.Sequence, pg_query.OnCommitAction_ONCOMMIT_NOOP)
	case *pg_query.Node_ViewStmt:
		s.createRel(st.ViewStmt.View, pg_query.OnCommitAction_ONCOMMIT_NOOP)
	case *pg_query.Node_CreateTableAsStmt:
		c := st.CreateTableAsStmt
		if c.Into != nil {
			s.createRel(c.Into.Rel, c.Into.OnCommit)
		} else {
			s.need("DDL")
		}
		if c.Into == nil || !c.Into.SkipData {
			s.walk(c, true)
		}

	default:
		// Every other statement is DDL or a utility command that changes
		// something (GRANT, COMMENT, SECURITY LABEL, ALTER SYSTEM, ...).
		s.need("DDL")
	}
}

// createRel classifies CREATE TABLE/SEQUENCE/VIEW and CREATE TABLE AS:
// temporary relations live in the session, which they pin.
func (s *stmtClassifier) createRel(rel *pg_query.RangeVar, onCommit pg_query.OnCommitAction) {
	temp := onCommit != pg_query.OnCommitAction_ON_COMMIT_ACTION_UNDEFINED &&
		onCommit != pg_query.OnCommitAction_ONCOMMIT_NOOP
	if isTempRel(rel) {
		temp = true
	}
	if temp {
		s.need("temp table")
		s.pin |= PinTempTable
		return
	}
	s.need("DDL")
}

// isTempRel: CREATE TEMP/TEMPORARY ..., or a relation created in the
// pg_temp schema (which PostgreSQL makes temporary).
func isTempRel(rel *pg_query.RangeVar) bool {
	if rel == nil {
		return false
	}
	schema := strings.ToLower(rel.Schemaname)
	return rel.Relpersistence == "t" || schema == "pg_temp" || strings.HasPrefix(schema, "pg_temp_")
}

func (s *stmtClassifier) transaction(t *pg_query.TransactionStmt) {
	switch t.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN, pg_query.TransactionStmtKind_TRANS_STMT_START:
		if readOnlyMode(t.Options) {
			s.txn = TxnBeginReadOnly
			return
		}
		s.txn = TxnBegin
		s.need("BEGIN")
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		s.txn = TxnCommit
		if t.Chain {
			s.txn = TxnCommitAndChain
		}
		s.need("COMMIT")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		s.txn = TxnRollback
		if t.Chain {
			s.txn = TxnRollbackAndChain
		}
		s.need("ROLLBACK")
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		s.txn = TxnSavepoint
		s.need("SAVEPOINT")
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		s.txn = TxnRelease
		s.need("RELEASE")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		s.txn = TxnRollbackTo
		s.need("ROLLBACK")
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		s.txn = TxnPrepare
		s.need("PREPARE TRANSACTION")
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		s.txn = TxnCommitPrepared
		s.need("COMMIT PREPARED")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		s.txn = TxnRollbackPrepared
		s.need("ROLLBACK PREPARED")
	default:
		s.need("DDL")
	}
}

// readOnlyMode reports whether a transaction_mode_list ends up READ ONLY.
// PostgreSQL applies the modes in order, so the last one wins.
//
// A SERIALIZABLE transaction is never "read only" for routing: a hot standby refuses serializable
// mode ("cannot use serializable mode in a hot standby"), so it must run on the primary.
func readOnlyMode(opts []*pg_query.Node) bool {
	ro := false
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		switch d.Defname {
		case "transaction_read_only":
			ro = constTrue(d.Arg)
		case "transaction_isolation":
			if c := d.Arg.GetAConst(); c != nil && strings.EqualFold(c.GetSval().GetSval(), "serializable") {
				return false
			}
		}
	}
	return ro
}

// constTrue interprets a boolean-ish constant the way the transaction
// modes and EXPLAIN options are written: 1/0, true/false, on/off; a
// missing argument means true.
func constTrue(n *pg_query.Node) bool {
	if n == nil {
		return true
	}
	if c := n.GetAConst(); c != nil {
		switch v := c.Val.(type) {
		case *pg_query.A_Const_Ival:
			return v.Ival.Ival != 0
		case *pg_query.A_Const_Boolval:
			return v.Boolval.Boolval
		case *pg_query.A_Const_Sval:
			return boolString(v.Sval.Sval)
		}
		return true
	}
	if v := n.GetInteger(); v != nil {
		return v.Ival != 0
	}
	if v := n.GetString_(); v != nil {
		return boolString(v.Sval)
	}
	if v := n.GetBoolean(); v != nil {
		return v.Boolval
	}
	return true
}

func boolString(s string) bool {
	switch strings.ToLower(s) {
	case "false", "off", "0", "no":
		return false
	}
	return true
}

func (s *stmtClassifier) set(v *pg_query.VariableSetStmt) {
	kind := SetSession
	if v.IsLocal {
		kind = SetLocal
	}
	name := strings.ToLower(v.Name)
	switch v.Kind {
	case pg_query.VariableSetKind_VAR_SET_MULTI:
		switch v.Name {
		case "TRANSACTION", "TRANSACTION SNAPSHOT":
			// Scoped to the current transaction: not session state.
			if v.Name == "TRANSACTION" && readOnlyMode(v.Args) {
				s.txn = TxnSetReadOnly
				return
			}
			s.txn = TxnSetTransaction
			s.need("SET TRANSACTION")
			return
		case "SESSION CHARACTERISTICS":
			// SET SESSION CHARACTERISTICS AS TRANSACTION ... sets the
			// default_transaction_* parameters.
			for _, a := range v.Args {
				d := a.GetDefElem()
				if d == nil {
					continue
				}
				op := SetOp{Kind: kind, Name: "default_" + d.Defname, Stmt: s.text()}
				if d.Defname == "transaction_isolation" {
					op.Value = setValue(s.sql, []*pg_query.Node{d.Arg})
				} else if constTrue(d.Arg) {
					op.Value = "on"
				} else {
					op.Value = "off"
				}
				s.sets = append(s.sets, op)
			}
		}
		s.need("SET")
		return
	case pg_query.VariableSetKind_VAR_SET_VALUE:
		s.sets = append(s.sets, SetOp{Kind: kind, Name: name, Value: setValue(s.sql, v.Args), Stmt: s.text()})
		s.need("SET")
	case pg_query.VariableSetKind_VAR_SET_DEFAULT:
		op := SetOp{Kind: SetReset, Name: name, Stmt: s.text()}
		if v.IsLocal {
			op.Kind, op.Value = SetLocal, "DEFAULT"
		}
		s.sets = append(s.sets, op)
		s.need("SET")
	case pg_query.VariableSetKind_VAR_SET_CURRENT:
		s.sets = append(s.sets, SetOp{Kind: kind, Name: name, Value: "FROM CURRENT", Stmt: s.text()})
		s.need("SET")
	case pg_query.VariableSetKind_VAR_RESET:
		s.sets = append(s.sets, SetOp{Kind: SetReset, Name: name, Stmt: s.text()})
		s.need("RESET")
	case pg_query.VariableSetKind_VAR_RESET_ALL:
		s.sets = append(s.sets, SetOp{Kind: SetResetAll, Stmt: s.text()})
		s.need("RESET")
	default:
		s.need("SET")
	}
}

// setValue renders a SET statement's value list: constants unquoted,
// anything else (SET TIME ZONE INTERVAL '1' HOUR) as its source text.
func setValue(sql string, args []*pg_query.Node) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		c := a.GetAConst()
		if c == nil {
			loc := minLocation(a.ProtoReflect())
			if loc < 0 || int(loc) >= len(sql) {
				return ""
			}
			// The rest of the statement from the value's first token.
			rest := sql[loc:]
			if i := strings.IndexByte(rest, ';'); i >= 0 {
				rest = rest[:i]
			}
			return strings.TrimSpace(rest)
		}
		switch v := c.Val.(type) {
		case *pg_query.A_Const_Sval:
			parts = append(parts, v.Sval.Sval)
		case *pg_query.A_Const_Ival:
			parts = append(parts, strconv.FormatInt(int64(v.Ival.Ival), 10))
		case *pg_query.A_Const_Fval:
			parts = append(parts, v.Fval.Fval)
		case *pg_query.A_Const_Boolval:
			parts = append(parts, strconv.FormatBool(v.Boolval.Boolval))
		default:
			parts = append(parts, "NULL")
		}
	}
	return strings.Join(parts, ", ")
}

// minLocation returns the smallest location field set in a subtree, or -1.
func minLocation(m protoreflect.Message) int32 {
	best := int32(-1)
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.Name() == "location" && fd.Kind() == protoreflect.Int32Kind:
				if l := int32(v.Int()); l >= 0 && (best < 0 || l < best) {
					best = l
				}
			case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
				for i, l := 0, v.List(); i < l.Len(); i++ {
					visit(l.Get(i).Message())
				}
			case fd.Kind() == protoreflect.MessageKind && !fd.IsMap():
				visit(v.Message())
			}
			return true
		})
	}
	visit(m)
	return best
}

// explain classifies EXPLAIN by the statement it explains. Without ANALYZE
// nothing runs, so the explained statement's pins do not apply.
func (s *stmtClassifier) explain(e *pg_query.ExplainStmt) {
	analyze := false
	for _, o := range e.Options {
		if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, "analyze") {
			analyze = constTrue(d.Arg)
		}
	}
	inner := stmtClassifier{fs: s.fs, sql: s.sql, raw: s.raw}
	inner.statement(e.Query)
	if inner.reason != "" {
		s.need(inner.reason)
	}
	if analyze {
		s.pin |= inner.pin
	}
}

// walk visits every node of a statement's tree. execute says whether the
// statement runs its expressions now (so that session-level advisory locks
// taken by them pin the session).
func (s *stmtClassifier) walk(m interface {
	ProtoReflect() protoreflect.Message
}, execute bool) {
	s.walkMsg(m.ProtoReflect(), execute)
}

func (s *stmtClassifier) walkMsg(m protoreflect.Message, execute bool) {
	switch n := m.Interface().(type) {
	case *pg_query.SelectStmt:
		if n.IntoClause != nil {
			// SELECT ... INTO creates a table.
			if isTempRel(n.IntoClause.Rel) {
				s.need("temp table")
				s.pin |= PinTempTable
			} else {
				s.need("SELECT INTO")
			}
		}
	case *pg_query.LockingClause:
		s.need(lockReason(n.Strength))
	case *pg_query.InsertStmt:
		// Also data-modifying CTEs: WITH x AS (INSERT ... RETURNING ...).
		s.need("INSERT")
	case *pg_query.UpdateStmt:
		s.need("UPDATE")
	case *pg_query.DeleteStmt:
		s.need("DELETE")
	case *pg_query.MergeStmt:
		s.need("MERGE")
	case *pg_query.FuncCall:
		s.funcCall(n, execute)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			for i, l := 0, v.List(); i < l.Len(); i++ {
				s.walkMsg(l.Get(i).Message(), execute)
			}
			return true
		}
		s.walkMsg(v.Message(), execute)
		return true
	})
}

func lockReason(st pg_query.LockClauseStrength) string {
	switch st {
	case pg_query.LockClauseStrength_LCS_FORKEYSHARE:
		return "FOR KEY SHARE"
	case pg_query.LockClauseStrength_LCS_FORSHARE:
		return "FOR SHARE"
	case pg_query.LockClauseStrength_LCS_FORNOKEYUPDATE:
		return "FOR NO KEY UPDATE"
	}
	return "FOR UPDATE"
}

func (s *stmtClassifier) funcCall(f *pg_query.FuncCall, execute bool) {
	var schema, name string
	switch n := len(f.Funcname); {
	case n == 0:
		return
	case n >= 2:
		schema = f.Funcname[n-2].GetString_().GetSval()
		fallthrough
	default:
		name = f.Funcname[n-1].GetString_().GetSval()
	}
	r, ok := s.fs.lookup(schema, name)
	if !ok {
		return
	}
	s.need(r.reason)
	if execute {
		s.pin |= r.pin
		if name == "set_config" && !isLocalSetConfig(f) {
			// A session-level change made by a function call (its name and value may be
			// computed) cannot be tracked and replayed like SET: the session keeps its connection.
			s.pin |= PinSetConfig
		}
	}
}

// isLocalSetConfig reports whether a set_config call's is_local argument is the constant true (the
// change ends with the transaction).
func isLocalSetConfig(f *pg_query.FuncCall) bool {
	if len(f.Args) != 3 {
		return false
	}
	c := f.Args[2].GetAConst()
	return c != nil && c.GetBoolval() != nil && c.GetBoolval().Boolval
}

// meridianSet recognises SET [SESSION | LOCAL] meridian.name {= | TO} word
// where word is a reserved keyword, which PostgreSQL's grammar rejects:
// DESIGN.md's own example, SET meridian.route = primary, is one (PRIMARY is
// reserved). The proxy handles meridian.* parameters itself and never
// sends them to a server, so such a SET must be reported, not refused.
func meridianSet(sql string) (Result, bool) {
	lx := lexer{src: sql}
	next := func() token { return lx.next() }
	t := next()
	if !isKw(t, "set") {
		return Result{}, false
	}
	kind := SetSession
	t = next()
	switch {
	case isKw(t, "session"):
		t = next()
	case isKw(t, "local"):
		kind = SetLocal
		t = next()
	}
	if !isKw(t, "meridian") || next().kind != tDot {
		return Result{}, false
	}
	param := next()
	if param.kind != tIdent && param.kind != tQIdent {
		return Result{}, false
	}
	if t = next(); !isKw(t, "to") && !(t.kind == tOp && t.text == "=") {
		return Result{}, false
	}
	value := next()
	if value.kind != tIdent || value.kw != kwReserved {
		return Result{}, false
	}
	end := lx.pos
	if t = next(); t.kind == tSemi {
		t = next()
	}
	if t.kind != tEOF {
		return Result{}, false
	}
	op := SetOp{
		Kind:  kind,
		Name:  "meridian." + strings.ToLower(param.text),
		Value: value.text,
		Stmt:  strings.TrimSpace(sql[:end]),
	}
	return Result{Route: RoutePrimary, Reason: "SET", Sets: []SetOp{op}, Statements: 1}, true
}
