package proxy

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meridiandb/meridian/internal/classify"
)

// volatility knows, per database, the user-defined functions whose calls must run on the primary
// (VOLATILE functions and procedures, and views that call them), read from that database's catalog
// on the primary. Functions are per database: a name volatile in one may be a plain read in another,
// and a function created in one is unknown in the others.
//
// A database's list is read when its first client logs in (prefetch; the client's first statement
// waits for it only if it is not in yet), again right after DDL through the proxy that may change it
// (Result.Catalog: the next statement of any of the database's clients waits for the new list), and
// every tenth discovery poll (for DDL that did not pass through this proxy). Between those, routing
// reads the list from memory: no round trip per query.
type volatility struct {
	cfg Config
	log *slog.Logger
	cls *classify.Classifier

	mu  sync.Mutex              // guards dbs
	dbs map[string]*dbFunctions // by database name
}

// dbFunctions is one database's list.
type dbFunctions struct {
	db  string
	fns atomic.Pointer[classify.Functions] // nil until first loaded
	// want increases with every invalidation (DDL through the proxy); have is the want a completed
	// load started after. The list is current when have ≥ want: a load that began before the DDL
	// committed does not count for it.
	want, have atomic.Uint64
	failedAt   atomic.Int64 // UnixNano of the last failed load: retried at most once a poll interval
	loadMu     sync.Mutex   // serialises loads; guards conn, addr, list and lastTried
	conn       *pgconn.PgConn
	addr       string // the primary conn is connected to
	list       string // the last list read
	lastTried  time.Time
}

func newVolatility(cfg Config, log *slog.Logger, cls *classify.Classifier) *volatility {
	return &volatility{cfg: cfg, log: log, cls: cls, dbs: map[string]*dbFunctions{}}
}

// entry returns db's entry, creating it.
func (v *volatility) entry(db string) *dbFunctions {
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.dbs[db]
	if d == nil {
		d = &dbFunctions{db: db}
		d.want.Store(1) // never loaded
		v.dbs[db] = d
	}
	return d
}

// functions returns d's current list for routing, loading it first when it was never loaded or
// DDL invalidated it. primary is the primary's address ("" when there is none: the last list is
// used). A failed load is logged and leaves the previous list (or none: the built-in and configured
// functions only) in place.
func (v *volatility) functions(ctx context.Context, d *dbFunctions, primary string) *classify.Functions {
	if d.current() || primary == "" {
		return d.fns.Load()
	}
	if f := d.failedAt.Load(); f != 0 && time.Since(time.Unix(0, f)) < v.cfg.PollInterval {
		return d.fns.Load() // do not try to connect for every statement while the primary refuses
	}
	v.load(ctx, d, primary, false)
	return d.fns.Load()
}

// primaryAddress is the current primary's address, "" when there is none.
func (p *Proxy) primaryAddress() string {
	snap := p.disc.Current()
	if snap.Primary == "" {
		return ""
	}
	n, _ := snap.Node(snap.Primary)
	return n.Address
}

// current reports whether d's list reflects every invalidation so far.
func (d *dbFunctions) current() bool { return d.have.Load() >= d.want.Load() }

// invalidate makes db's clients read its list again before their next statement.
func (v *volatility) invalidate(db string) {
	v.entry(db).want.Add(1)
}

// prefetch starts reading d's list when it is not current, so that a new client's first statement
// does not wait for it (the load runs while the client finishes its startup).
func (v *volatility) prefetch(ctx context.Context, wg *sync.WaitGroup, d *dbFunctions, primary string) {
	if d.current() || primary == "" {
		return
	}
	wg.Go(func() { v.functions(ctx, d, primary) })
}

// refreshAll re-reads every known database's list (discovery, every tenth poll and on a new
// primary).
func (v *volatility) refreshAll(ctx context.Context, primary string) {
	v.mu.Lock()
	dbs := make([]*dbFunctions, 0, len(v.dbs))
	for _, d := range v.dbs {
		dbs = append(dbs, d)
	}
	v.mu.Unlock()
	for _, d := range dbs {
		if ctx.Err() != nil {
			return
		}
		v.load(ctx, d, primary, true)
	}
}

// volatileQuery lists a database's user-defined VOLATILE functions and procedures (calling one may
// write), and the views that call a VOLATILE user function, or one of the built-in functions that
// write or fail on a standby (volatileViewBuiltins), directly or through another such view: reading
// one may write, or fail on a replica. User functions are found through the view rule's
// dependencies (pg_depend); built-in ones are pinned, so PostgreSQL records no dependency on them,
// and their calls are found in the rule's tree (":funcid <oid>"). A view over a function that is not
// VOLATILE but calls one in its body is not found: a body is not a dependency.
const volatileQuery = `WITH RECURSIVE f AS (
  SELECT p.oid, n.nspname || '.' || p.proname AS name
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
), b AS (
  SELECT ':funcid (' || string_agg(p.oid::text, '|') || ')\M' AS re FROM pg_catalog.pg_proc p
  WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND p.proname IN (` + volatileViewBuiltins + `)
), v AS (
  SELECT c.oid, n.nspname || '.' || c.relname AS name
  FROM pg_catalog.pg_rewrite r
  JOIN pg_catalog.pg_class c ON c.oid = r.ev_class AND c.relkind = 'v'
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND (EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN f ON f.oid = d.refobjid
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
                   AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass)
      OR r.ev_action::text ~ (SELECT re FROM b))
  UNION
  SELECT c.oid, n.nspname || '.' || c.relname
  FROM v JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = v.oid
    AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  JOIN pg_catalog.pg_class c ON c.oid = r.ev_class AND c.relkind = 'v' AND c.oid <> v.oid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
)
SELECT (SELECT coalesce(string_agg(DISTINCT name, ','), '') FROM f),
       (SELECT coalesce(string_agg(DISTINCT name, ','), '') FROM v)`

// volatileViewBuiltins are the built-in functions that make a view need the primary: they write, take
// locks or fail on a standby. Most built-in volatile functions (now(), random(), ...) are plain reads.
const volatileViewBuiltins = `'nextval', 'setval', 'currval', 'lastval', 'txid_current', 'pg_current_xact_id',
  'pg_advisory_lock', 'pg_advisory_xact_lock', 'pg_try_advisory_lock', 'pg_try_advisory_xact_lock',
  'pg_advisory_lock_shared', 'pg_advisory_xact_lock_shared', 'pg_try_advisory_lock_shared',
  'pg_try_advisory_xact_lock_shared', 'pg_notify', 'set_config', 'pg_current_wal_lsn',
  'pg_current_wal_insert_lsn', 'lo_import', 'lo_export', 'lo_create', 'lo_creat', 'lo_unlink',
  'lo_from_bytea', 'lo_put', 'pg_backend_pid', 'pg_cancel_backend', 'pg_terminate_backend'`

// load reads d's list from the primary at addr over d's own connection (monitor credentials).
// periodic: the discovery's refresh, which re-reads a current list unless it was read within the
// last poll interval; otherwise a list made current while this call waited is not read again.
func (v *volatility) load(ctx context.Context, d *dbFunctions, addr string, periodic bool) {
	need := d.want.Load()
	d.loadMu.Lock()
	defer d.loadMu.Unlock()
	switch {
	case !periodic && d.have.Load() >= need:
		return // another session loaded it while this one waited
	case periodic && d.current() && d.addr == addr && time.Since(d.lastTried) < v.cfg.PollInterval:
		return
	}
	start := d.want.Load() // the DDL of every invalidation up to here has committed
	d.lastTried = time.Now()
	qctx, cancel := context.WithTimeout(ctx, v.cfg.ServerConnectTimeout)
	defer cancel()
	funcs, views, err := d.query(qctx, v.cfg, addr)
	if err != nil {
		if ctx.Err() != nil {
			return // the caller left (a client that disconnected): not the primary's fault
		}
		d.failedAt.Store(time.Now().UnixNano())
		v.log.Warn("cannot list volatile functions", "database", d.db, "err", err)
		return
	}
	d.failedAt.Store(0)
	if list := funcs + ";" + views; list != d.list || d.fns.Load() == nil {
		d.list = list
		d.fns.Store(v.cls.Functions(splitNames(funcs), splitNames(views)))
	}
	d.have.Store(start)
}

func splitNames(list string) []string {
	if list == "" {
		return nil
	}
	return strings.Split(list, ",")
}

// query runs volatileQuery: the functions and the views; d.loadMu is held.
func (d *dbFunctions) query(ctx context.Context, cfg Config, addr string) (funcs, views string, err error) {
	if d.conn != nil && (d.addr != addr || d.conn.IsClosed()) {
		d.closeConn()
	}
	if d.conn == nil {
		pc, err := pgconn.ParseConfig(cfg.serverConnString(addr, cfg.MonitorUser, d.db, cfg.MonitorPassword))
		if err != nil {
			return "", "", err
		}
		pc.RuntimeParams["application_name"] = "meridian-proxy-monitor"
		if d.conn, err = pgconn.ConnectConfig(ctx, pc); err != nil {
			return "", "", err
		}
		d.addr = addr
	}
	res, err := d.conn.Exec(ctx, volatileQuery).ReadAll()
	if err != nil || len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 2 {
		d.closeConn()
		if err == nil {
			err = errors.New("unexpected answer to the volatile functions query")
		}
		return "", "", err
	}
	return string(res[0].Rows[0][0]), string(res[0].Rows[0][1]), nil
}

func (d *dbFunctions) closeConn() {
	if d.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = d.conn.Close(ctx)
	d.conn = nil
}

// close closes every database's connection (Proxy.Close, after discovery stopped).
func (v *volatility) close() {
	v.mu.Lock()
	dbs := v.dbs
	v.dbs = map[string]*dbFunctions{}
	v.mu.Unlock()
	for _, d := range dbs {
		d.loadMu.Lock()
		d.closeConn()
		d.loadMu.Unlock()
	}
}
