package proxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// AdminDatabase is the virtual database of the admin console: `psql -d meridian` as an admin user.
const AdminDatabase = "meridian"

// adminCommands lists what the console understands, for errors and SHOW HELP.
var adminCommands = []string{
	"SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS", "SHOW STATS", "SHOW NODES", "SHOW CONFIG", "SHOW HELP",
	"PAUSE [db]", "RESUME [db]", "RECONNECT [db]", "RELOAD", "KILL <client id> | KILL <db>", "SHUTDOWN",
}

// serveAdmin runs an admin console session: the simple query protocol, answered by the proxy.
func (c *client) serveAdmin(st *startup) error {
	if !slices.Contains(c.p.cfg.AdminUsers, st.user) {
		c.fatal(&pgError{Code: codeInvalidAuthorization,
			Message: fmt.Sprintf("user %q may not use the admin console: it is not in admin_users", st.user)})
		return nil
	}
	out := appendMessage(c.out[:0], &pgproto3.AuthenticationOk{})
	for _, kv := range [][2]string{{"server_version", "15.0 (meridian admin console)"}, {"client_encoding", "UTF8"},
		{"server_encoding", "UTF8"}, {"DateStyle", "ISO, MDY"}, {"integer_datetimes", "on"}, {"standard_conforming_strings", "on"},
		{"application_name", ""}} {
		out = appendMessage(out, &pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]})
	}
	out = appendMessage(out, &pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.secret})
	if err := c.reply(appendReadyForQuery(out, 'I')); err != nil {
		return err
	}
	c.log.Info("admin console session", "user", st.user)
	for {
		typ, msg, err := c.rd.next()
		if err != nil {
			return err
		}
		switch typ {
		case msgQuery:
			sql, _, err := cstring(msg[5:])
			if err != nil {
				return err
			}
			if err := c.adminQuery(sql); err != nil {
				return err
			}
		case msgTerminate:
			return nil
		case msgSync:
			if err := c.reply(appendReadyForQuery(appendError(c.out[:0], newError(codeFeatureNotSupported,
				"the admin console speaks the simple query protocol only (psql does)")), 'I')); err != nil {
				return err
			}
		case msgParse, msgBind, msgDescribe, msgExecute, msgClose, msgFlush:
			// Answered at the Sync.
		default:
			c.fatal(newError(codeProtocolViolation, "invalid message type %q in the admin console", typ))
			return nil
		}
	}
}

// adminQuery runs one console command (several separated by ';' are run in turn).
func (c *client) adminQuery(sql string) error {
	out := c.out[:0]
	ran := false
	for _, stmt := range strings.Split(sql, ";") {
		words := strings.Fields(stmt)
		if len(words) == 0 {
			continue
		}
		ran = true
		res, err := c.adminCommand(words)
		if err != nil {
			out = appendError(out, toPgError(err))
			break
		}
		out = append(out, res...)
	}
	if !ran {
		out = append(out, msgEmptyQuery, 0, 0, 0, 4)
	}
	return c.reply(appendReadyForQuery(out, 'I'))
}

// table builds a result set of text columns.
type table struct {
	cols []string
	rows [][]string
}

func (t *table) add(vals ...any) {
	row := make([]string, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case string:
			row[i] = x
		case time.Time:
			if !x.IsZero() {
				row[i] = x.UTC().Format("2006-01-02 15:04:05 UTC")
			}
		case time.Duration:
			row[i] = strconv.FormatInt(x.Microseconds(), 10)
		default:
			row[i] = fmt.Sprint(x)
		}
	}
	t.rows = append(t.rows, row)
}

func (t *table) encode(tag string) []byte {
	fields := make([]pgproto3.FieldDescription, len(t.cols))
	for i, n := range t.cols {
		fields[i] = pgproto3.FieldDescription{Name: []byte(n), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}
	}
	out := appendMessage(nil, &pgproto3.RowDescription{Fields: fields})
	for _, r := range t.rows {
		vals := make([][]byte, len(r))
		for i, v := range r {
			vals[i] = []byte(v)
		}
		out = appendMessage(out, &pgproto3.DataRow{Values: vals})
	}
	return appendCommandComplete(out, tag)
}

func (c *client) adminCommand(w []string) ([]byte, error) {
	verb := strings.ToUpper(w[0])
	arg := ""
	if len(w) > 1 {
		arg = w[1]
	}
	p := c.p
	switch {
	case verb == "SHOW" && len(w) == 2:
		switch strings.ToUpper(arg) {
		case "POOLS":
			return p.showPools().encode("SHOW"), nil
		case "CLIENTS":
			return p.showClients().encode("SHOW"), nil
		case "SERVERS":
			return p.showServers().encode("SHOW"), nil
		case "STATS":
			return p.showStats().encode("SHOW"), nil
		case "NODES":
			return p.showNodes().encode("SHOW"), nil
		case "CONFIG":
			return p.showConfig().encode("SHOW"), nil
		case "HELP":
			t := &table{cols: []string{"command"}}
			for _, cmd := range adminCommands {
				t.add(cmd)
			}
			return t.encode("SHOW"), nil
		}
	case verb == "PAUSE" && len(w) <= 2:
		c.log.Info("admin: PAUSE", "database", arg)
		if err := p.pauses.pause(p.ctx, arg, p.activeTransactions); err != nil {
			return nil, err
		}
		return appendCommandComplete(nil, "PAUSE"), nil
	case verb == "RESUME" && len(w) <= 2:
		c.log.Info("admin: RESUME", "database", arg)
		if !p.pauses.resume(arg) {
			return nil, newError(codeObjectNotInState, "not paused: %s", orAll(arg))
		}
		return appendCommandComplete(nil, "RESUME"), nil
	case verb == "RECONNECT" && len(w) <= 2:
		n := p.reconnect(arg)
		c.log.Info("admin: RECONNECT", "database", arg, "connections", n)
		return appendCommandComplete(nil, "RECONNECT"), nil
	case verb == "RELOAD" && len(w) == 1:
		source := p.reloadSource.Load()
		if source == nil {
			return nil, newError(codeFeatureNotSupported, "this proxy was not started from a configuration file: nothing to reload")
		}
		cfg, err := (*source)()
		if err == nil {
			var restart []string
			if restart, err = p.Reload(cfg); err == nil && len(restart) > 0 {
				return append(appendNotice(nil, "changed settings that need a restart: "+strings.Join(restart, ", ")),
					appendCommandComplete(nil, "RELOAD")...), nil
			}
		}
		if err != nil {
			return nil, newError(codeConfigFile, "reload failed, the running configuration stays: %v", err)
		}
		return appendCommandComplete(nil, "RELOAD"), nil
	case verb == "KILL" && len(w) == 2:
		n := p.kill(arg, c)
		if n == 0 {
			return nil, newError(codeUndefinedObject, "no client %s (KILL takes a client id from SHOW CLIENTS, or a database name)", arg)
		}
		c.log.Info("admin: KILL", "target", arg, "clients", n)
		return appendCommandComplete(nil, "KILL"), nil
	case verb == "SHUTDOWN" && len(w) == 1:
		c.log.Info("admin: SHUTDOWN")
		go p.Shutdown(p.cfg.ShutdownTimeout)
		return appendCommandComplete(nil, "SHUTDOWN"), nil
	}
	return nil, &pgError{Severity: "ERROR", Code: codeSyntaxError, Message: fmt.Sprintf("unknown admin command: %s", strings.Join(w, " ")),
		Hint: "Commands: " + strings.Join(adminCommands, ", ") + "."}
}

func orAll(db string) string {
	if db == "" {
		return "all databases"
	}
	return "database " + db
}

func appendNotice(dst []byte, msg string) []byte {
	return appendMessage(dst, &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: msg})
}

// ---- pause ----

// pauses holds new transactions of paused databases ("" pauses all) until they are resumed.
type pauses struct {
	any     atomic.Bool // something is paused: checked without the lock on every checkout
	mu      sync.Mutex
	paused  map[string]bool
	resumed chan struct{} // closed (and replaced) on every RESUME
}

func newPauses() *pauses { return &pauses{paused: map[string]bool{}, resumed: make(chan struct{})} }

func (ps *pauses) holds(db string) (bool, <-chan struct{}) {
	if !ps.any.Load() {
		return false, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.paused[""] || ps.paused[db], ps.resumed
}

// wait blocks while db is paused.
func (ps *pauses) wait(ctx context.Context, db string) error {
	for {
		held, resumed := ps.holds(db)
		if !held {
			return nil
		}
		select {
		case <-resumed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pause holds new transactions of db, then waits until no transaction of db is running.
func (ps *pauses) pause(ctx context.Context, db string, active func(db string) int) error {
	ps.mu.Lock()
	ps.paused[db] = true
	ps.any.Store(true)
	ps.mu.Unlock()
	for active(db) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func (ps *pauses) resume(db string) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if db == "" && len(ps.paused) > 0 {
		clear(ps.paused)
	} else if ps.paused[db] {
		delete(ps.paused, db)
	} else {
		return false
	}
	ps.any.Store(len(ps.paused) > 0)
	close(ps.resumed)
	ps.resumed = make(chan struct{})
	return true
}

// activeTransactions counts clients of db ("" for all) holding a server connection for a transaction.
func (p *Proxy) activeTransactions(db string) int {
	n := 0
	for _, c := range p.clientList() {
		c.mu.Lock()
		busy := c.cur != nil
		c.mu.Unlock()
		if busy && (db == "" || c.database == db) {
			n++
		}
	}
	return n
}

func (p *Proxy) clientList() []*client {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := make([]*client, 0, len(p.clients))
	for _, c := range p.clients {
		list = append(list, c)
	}
	slices.SortFunc(list, func(a, b *client) int { return a.connectedAt.Compare(b.connectedAt) })
	return list
}

func (p *Proxy) poolList() []*pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := make([]*pool, 0, len(p.pools))
	for _, pl := range p.pools {
		list = append(list, pl)
	}
	slices.SortFunc(list, func(a, b *pool) int {
		return strings.Compare(a.key.database+"\x00"+a.key.user+"\x00"+a.key.node, b.key.database+"\x00"+b.key.user+"\x00"+b.key.node)
	})
	return list
}

// reconnect closes the idle server connections of db's pools ("" for all) and has the lent ones
// closed when they come back, so every transaction from now on gets a fresh connection.
func (p *Proxy) reconnect(db string) int {
	n := 0
	for _, pl := range p.poolList() {
		if db != "" && pl.key.database != db {
			continue
		}
		pl.mu.Lock()
		pl.gen++
		n += len(pl.conns)
		pl.mu.Unlock()
		pl.closeIdle()
	}
	return n
}

// kill disconnects a client by id, or every client of a database (never the admin session itself).
func (p *Proxy) kill(target string, self *client) int {
	id, err := strconv.ParseUint(target, 10, 32)
	n := 0
	for _, c := range p.clientList() {
		if c == self || !((err == nil && c.pid == uint32(id)) || (err != nil && c.database == target)) {
			continue
		}
		c.terminate(&pgError{Code: codeAdminShutdown, Message: "terminating connection due to administrator command (KILL in the proxy's admin console)"})
		n++
	}
	return n
}

// ---- SHOW ----

func (p *Proxy) showPools() *table {
	t := &table{cols: []string{"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login",
		"maxwait", "maxwait_us", "pool_mode", "node", "pool_size", "paused"}}
	clients := p.clientList()
	for _, pl := range p.poolList() {
		active, waiting := 0, 0
		var maxwait time.Duration
		for _, c := range clients {
			if c.user != pl.key.user || c.database != pl.key.database {
				continue
			}
			c.mu.Lock()
			cur := c.cur
			c.mu.Unlock()
			if cur != nil && cur.pool == pl {
				active++
			}
			if c.waiting.Load() == pl {
				waiting++
				if ws := c.waitSince.Load(); ws != 0 {
					maxwait = max(maxwait, time.Since(time.Unix(0, ws)))
				}
			}
		}
		pl.mu.Lock()
		idle, open, login := len(pl.idle), len(pl.conns), pl.open-len(pl.conns)
		pl.mu.Unlock()
		paused, _ := p.pauses.holds(pl.key.database)
		t.add(pl.key.database, pl.key.user, active, waiting, open-idle, idle, 0, max(0, login),
			int(maxwait.Seconds()), maxwait.Microseconds()%1_000_000, string(p.cfg.PoolMode), pl.key.node, p.poolSize.Load(), paused)
	}
	return t
}

func (p *Proxy) showClients() *table {
	t := &table{cols: []string{"type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
		"request_time", "wait", "wait_us", "id", "link", "tls", "pinned_node"}}
	for _, c := range p.clientList() {
		state, link := "idle", ""
		c.mu.Lock()
		if c.cur != nil {
			state, link = "active", fmt.Sprintf("%s/%d", c.cur.pool.key.node, c.cur.pid)
		}
		c.mu.Unlock()
		if c.waiting.Load() != nil {
			state = "waiting"
		}
		if c.database == AdminDatabase {
			state = "admin"
		}
		pinned, _ := c.pinnedShown.Load().(string)
		host, port := splitHostPort(c.conn.RemoteAddr())
		lhost, lport := splitHostPort(c.conn.LocalAddr())
		var wait time.Duration
		if ws := c.waitSince.Load(); ws != 0 && state == "waiting" {
			wait = time.Since(time.Unix(0, ws))
		}
		var request time.Time
		if r := c.lastRequest.Load(); r != 0 {
			request = time.Unix(0, r)
		}
		t.add("C", c.user, c.database, state, host, port, lhost, lport, c.connectedAt, request,
			int(wait.Seconds()), wait.Microseconds()%1_000_000, c.pid, link, c.tls, pinned)
	}
	return t
}

func splitHostPort(a net.Addr) (string, string) {
	if a == nil {
		return "", ""
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), ""
	}
	return h, p
}

func (p *Proxy) showServers() *table {
	t := &table{cols: []string{"type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
		"request_time", "remote_pid", "node"}}
	type row struct {
		sc       *serverConn
		idle     bool
		lastUsed time.Time
	}
	for _, pl := range p.poolList() {
		pl.mu.Lock()
		idle := map[*serverConn]bool{}
		for _, sc := range pl.idle {
			idle[sc] = true
		}
		rows := make([]row, 0, len(pl.conns))
		for sc := range pl.conns {
			rows = append(rows, row{sc, idle[sc], sc.lastUsed})
		}
		pl.mu.Unlock()
		slices.SortFunc(rows, func(a, b row) int { return a.sc.created.Compare(b.sc.created) })
		for _, r := range rows {
			state := "active"
			if r.idle {
				state = "idle"
			}
			host, port := splitHostPort(r.sc.conn.RemoteAddr())
			lhost, lport := splitHostPort(r.sc.conn.LocalAddr())
			t.add("S", pl.key.user, pl.key.database, state, host, port, lhost, lport, r.sc.created, r.lastUsed, r.sc.pid, pl.key.node)
		}
	}
	return t
}

func (p *Proxy) showStats() *table {
	t := &table{cols: []string{"database", "node", "route", "total_xact_count", "total_query_count"}}
	for _, pl := range p.poolList() {
		for i, r := range routeLabels {
			xacts, queries := counterValue(pl.byRoute[i].transactions), counterValue(pl.byRoute[i].queries)
			if xacts == 0 && queries == 0 {
				continue
			}
			t.add(pl.key.database, pl.key.node, r, xacts, queries)
		}
	}
	return t
}

func (p *Proxy) showNodes() *table {
	t := &table{cols: []string{"name", "region", "address", "role", "up", "replay_lsn", "lag_bytes", "lag_seconds", "rtt_ms", "checked_at", "last_error"}}
	snap := p.disc.Current()
	for _, n := range snap.Nodes {
		role := "replica"
		switch {
		case n.Name == snap.Primary:
			role = "primary"
		case n.Primary:
			role = "primary (conflicting)"
		case !n.Up:
			role = "unknown"
		}
		lagBytes, lagSec, lsn := "", "", ""
		if st := p.lag.state(n.Name); st != nil {
			lsn = st.LSN.String()
			if !st.Primary {
				lagBytes, lagSec = strconv.FormatUint(st.LagBytes, 10), strconv.FormatFloat(st.Lag.Seconds(), 'f', 3, 64)
			}
		}
		t.add(n.Name, n.Region, n.Address, role, n.Up, lsn, lagBytes, lagSec, strconv.FormatFloat(float64(n.RTT.Microseconds())/1000, 'f', 2, 64),
			n.CheckedAt, n.Err)
	}
	return t
}

func (p *Proxy) showConfig() *table {
	t := &table{cols: []string{"key", "value", "default", "changeable", "pending_restart"}}
	def := DefaultConfig()
	for _, e := range p.cfg.entries(*p.applied.Load(), def) {
		t.add(e.key, e.value, e.def, e.reloadable, e.pending)
	}
	return t
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
