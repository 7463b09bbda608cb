// Smoke suite of node-postgres (pg) and postgres.js (postgres) for `make compat`.
//
// Every case runs first against COMPAT_DIRECT_URL (PostgreSQL itself) and then against
// COMPAT_TARGET_URL (the proxy, or PostgreSQL again in direct mode); the case passes when both
// answers are the same. Answers hold rows, SQLSTATEs and counts, never names that differ per run.
// COMPAT_OBSERVER_URLS are the servers' own addresses, used only to see that a query to cancel is
// running (it may run on a replica). One JSON line per case goes to stdout:
//   {"name":"pg/listen-idle","status":"pass|fail","detail":"..."}
import { createHash } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import pg from 'pg'
import postgres from 'postgres'
import copyStreams from 'pg-copy-streams'

const direct = process.env.COMPAT_DIRECT_URL
const target = process.env.COMPAT_TARGET_URL
const mode = process.env.COMPAT_MODE || 'direct'
const observers = (process.env.COMPAT_OBSERVER_URLS || direct).split(',')
if (!direct || !target) {
  console.error('COMPAT_DIRECT_URL and COMPAT_TARGET_URL are required')
  process.exit(2)
}

const caseTimeout = 20000 // a case that takes longer hangs: its answer is "timeout"
const waitNotify = 5000 // directly a notification arrives within milliseconds

let seq = 0
const newTag = () => `${mode}_${process.pid}_${++seq}`

// A run owns the clients it opens so that a hung case can be torn down.
class Run {
  constructor (url) { this.url = url; this.closers = [] }
  async pg (extra = {}) {
    const c = new pg.Client({ connectionString: this.url, ...extra })
    c.on('error', () => {})
    this.closers.push(() => c.connection?.stream?.destroy())
    await c.connect()
    return c
  }
  pjs (extra = {}) {
    const sql = postgres(this.url, { max: 1, onnotice: () => {}, ...extra })
    this.closers.push(() => sql.end({ timeout: 0 }))
    return sql
  }
  close () { for (const f of this.closers) { try { f() } catch {} } }
}

const md5 = (s) => createHash('md5').update(s).digest('hex')
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const timeout = (p, ms, what = 'timeout') => Promise.race([p, sleep(ms).then(() => { throw Object.assign(new Error(what), { code: what }) })])

// short keeps answers readable: a long string becomes its length and digest.
const short = (v) => typeof v === 'string' && v.length > 40 ? `${v.length}:${md5(v).slice(0, 12)}` : v

// answer turns a promise into a comparable value: rows, or the error's SQLSTATE.
async function answer (p) {
  try {
    const r = await p
    return { rows: (r.rows ?? Array.from(r)).map(row => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, short(v)]))) }
  } catch (e) {
    return { error: e.code || e.message }
  }
}

// waitRunning waits until a statement holding marker is active on one of the servers.
async function waitRunning (marker) {
  const clients = await Promise.all(observers.map(async url => {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    return c
  }))
  try {
    for (let i = 0; i < 200; i++) {
      for (const c of clients) {
        const r = await c.query("select count(*)::int as n from pg_stat_activity where state = 'active' and pid <> pg_backend_pid() and position($1 in query) > 0", [marker])
        if (r.rows[0].n > 0) return true
      }
      await sleep(50)
    }
    return false
  } finally {
    await Promise.all(clients.map(c => c.end()))
  }
}

// caughtUp waits until every replica has replayed the primary's WAL so far. Cases call it before a
// second connection reads what the first one changed: a new client's read may go to a replica, and
// read-your-writes across client connections is not what these cases test (docs/consistency.md).
async function caughtUp () {
  const primary = new pg.Client({ connectionString: direct })
  await primary.connect()
  const { rows: [{ lsn }] } = await primary.query('select pg_current_wal_lsn()::text as lsn')
  await primary.end()
  for (const url of observers) {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    try {
      for (let i = 0; i < 200; i++) {
        const { rows: [r] } = await c.query('select not pg_is_in_recovery() or pg_last_wal_replay_lsn() >= $1::pg_lsn as ok', [lsn])
        if (r.ok) break
        await sleep(25)
      }
    } finally { await c.end() }
  }
}

async function dropTable (table) {
  const c = new pg.Client({ connectionString: direct })
  await c.connect()
  try { await c.query(`drop table if exists ${table}`) } finally { await c.end() }
}

const copyLines = Array.from({ length: 1000 }, (_, i) => `${i}\t${i * 2}\n`).join('')

// ---- node-postgres ----

const pgCases = {
  // A named statement prepared before ALTER TABLE: PostgreSQL refuses to run it again (0A000), while
  // a new connection's new statement of the same text sees the new column.
  async 'prepared-after-alter' (run, tag) {
    const t = `cmp_${tag}`
    const c1 = await run.pg()
    await c1.query(`create table ${t} (a int, b int)`)
    await c1.query(`insert into ${t} values (1, 2)`)
    const q = { name: 'compat_sel', text: `select * from ${t} where a = $1`, values: [1] }
    const before = await answer(c1.query(q))
    await c1.query(`alter table ${t} add column c int default 3`)
    await caughtUp()
    const sameConn = await answer(c1.query(q))
    const c2 = await run.pg()
    const newConn = await answer(c2.query(q))
    const sameConnAgain = await answer(c1.query(q))
    const unnamed = await answer(c1.query(`select * from ${t} where a = $1`, [1]))
    return { before, sameConn, newConn, sameConnAgain, unnamed }
  },
  // LISTEN, then stay idle: the notification must arrive without another statement.
  async 'listen-idle' (run, tag) {
    const l = await run.pg()
    const got = new Promise(resolve => l.on('notification', m => resolve(m.payload)))
    await l.query(`listen compat_${tag}`)
    const n = await run.pg()
    await n.query(`notify compat_${tag}, 'hello'`)
    return { payload: await timeout(got, waitNotify).catch(e => e.code) }
  },
  // Cancel a running pg_sleep with a cancel request; the connection works afterwards.
  async cancel (run, tag) {
    const c = await run.pg()
    const marker = `compat-cancel-${tag}`
    const p = answer(c.query(`select pg_sleep(30) /* ${marker} */`))
    const running = await waitRunning(marker)
    const canceller = new pg.Client({ connectionString: run.url })
    const start = Date.now()
    canceller.cancel(c, c.activeQuery)
    const r = await p
    return { running, r, quick: Date.now() - start < 10000, after: await answer(c.query('select 1 as one')) }
  },
  // COPY FROM STDIN, read it back (read-your-writes), COPY TO STDOUT.
  async copy (run, tag) {
    const t = `cmp_${tag}`
    const c = await run.pg()
    await c.query(`create table ${t} (a int, b int)`)
    await pipeline(Readable.from([copyLines]), c.query(copyStreams.from(`copy ${t} (a, b) from stdin`)))
    const count = await answer(c.query(`select count(*)::int as n, sum(b)::int as s from ${t}`))
    let out = ''
    await pipeline(c.query(copyStreams.to(`copy (select a, b from ${t} order by a) to stdout`)), new Writable({
      write (chunk, _, cb) { out += chunk; cb() }
    }))
    return { count, out: md5(out), same: out === copyLines }
  },
  // Queries sent without waiting (pg's pipeline mode), one of them failing; then an error at commit
  // of a deferred constraint, after which the connection must answer its own next statement.
  async pipeline (run, tag) {
    const t = `cmp_${tag}`
    const c = await run.pg({ pipeline: true })
    const qs = [
      c.query(`create table ${t} (a int unique deferrable initially deferred)`),
      c.query(`insert into ${t} values ($1)`, [1]),
      c.query(`select count(*)::int as n from ${t}`),
      c.query('select 1/0 as x'),
      c.query('select $1::int as v', [7]),
      c.query(`insert into ${t} values ($1)`, [1]), // fails at commit (Sync), after CommandComplete
      c.query('select $1::int as v', [8])
    ]
    return Promise.all(qs.map(answer))
  },
  // A Pool of 8 with 16 concurrent workers: each inserts and reads its row back on the same client.
  async pool (run, tag) {
    const t = `cmp_${tag}`
    const setup = await run.pg()
    await setup.query(`create table ${t} (id serial primary key, w int, i int)`)
    const pool = new pg.Pool({ connectionString: run.url, max: 8 })
    pool.on('error', () => {})
    run.closers.push(() => pool.end())
    let found = 0; const errors = []
    await Promise.all(Array.from({ length: 16 }, async (_, w) => {
      for (let i = 0; i < 25; i++) {
        const cl = await pool.connect()
        try {
          const { rows } = await cl.query(`insert into ${t} (w, i) values ($1, $2) returning id`, [w, i])
          const r = await cl.query(`select count(*)::int as n from ${t} where id = $1`, [rows[0].id])
          found += r.rows[0].n
        } catch (e) { errors.push(e.code || e.message) } finally { cl.release() }
      }
    }))
    const total = await answer(pool.query(`select count(*)::int as n, count(distinct w)::int as w from ${t}`))
    return { found, errors: [...new Set(errors)], total }
  }
}

// ---- postgres.js ----

const pjsCases = {
  // postgres.js prepares every statement (Parse/Describe/Flush). After ALTER TABLE, a new connection
  // prepares the same text again; the old connection's statement is re-prepared by the driver.
  async 'prepared-after-alter' (run, tag) {
    const t = `cmp_${tag}`
    const sql1 = run.pjs()
    await sql1.unsafe(`create table ${t} (a int, b int)`)
    await sql1.unsafe(`insert into ${t} values (1, 2)`)
    const q = (sql) => sql.unsafe(`select * from ${t} where a = $1`, [1], { prepare: true })
    const before = await answer(q(sql1))
    await sql1.unsafe(`alter table ${t} add column c int default 3`)
    await caughtUp()
    const sql2 = run.pjs()
    const newConn = await answer(q(sql2))
    const sameConn = await answer(q(sql1))
    const again = await answer(q(sql1))
    return { before, newConn, sameConn, again }
  },
  async 'listen-idle' (run, tag) {
    const sql = run.pjs({ max: 2 })
    let resolve
    const got = new Promise(r => { resolve = r })
    await sql.listen(`compat_${tag}`, payload => resolve(payload))
    await sql.notify(`compat_${tag}`, 'hello')
    return { payload: await timeout(got, waitNotify).catch(e => e.code) }
  },
  async cancel (run, tag) {
    const sql = run.pjs()
    const marker = `compat-cancel-${tag}`
    const q = sql.unsafe(`select pg_sleep(30) /* ${marker} */`)
    const p = answer(q)
    const running = await waitRunning(marker)
    const start = Date.now()
    await q.cancel()
    const r = await p
    return { running, r, quick: Date.now() - start < 10000, after: await answer(sql`select 1 as one`) }
  },
  async copy (run, tag) {
    const t = `cmp_${tag}`
    const sql = run.pjs()
    await sql.unsafe(`create table ${t} (a int, b int)`)
    const w = await sql.unsafe(`copy ${t} (a, b) from stdin`).writable()
    await pipeline(Readable.from([copyLines]), w)
    const count = await answer(sql.unsafe(`select count(*)::int as n, sum(b)::int as s from ${t}`))
    const r = await sql.unsafe(`copy (select a, b from ${t} order by a) to stdout`).readable()
    let out = ''
    for await (const chunk of r) out += chunk
    return { count, out: md5(out), same: out === copyLines }
  },
  // One connection, many statements in flight at once (postgres.js pipelines by default), with an
  // error in the middle and a commit-time error of a deferred constraint.
  async pipeline (run, tag) {
    const t = `cmp_${tag}`
    const sql = run.pjs()
    await sql.unsafe(`create table ${t} (a int unique deferrable initially deferred)`)
    const qs = [
      sql.unsafe(`insert into ${t} values ($1)`, [1]),
      sql.unsafe(`select count(*)::int as n from ${t}`),
      sql`select 1/0 as x`,
      sql`select ${7}::int as v`,
      sql.unsafe(`insert into ${t} values ($1)`, [1]),
      sql`select ${8}::int as v`,
      ...Array.from({ length: 20 }, (_, i) => sql`select ${i}::int as i, repeat('x', ${i * 100}) as pad`)
    ]
    return Promise.all(qs.map(answer))
  },
  async pool (run, tag) {
    const t = `cmp_${tag}`
    const sql = run.pjs({ max: 8 })
    await sql.unsafe(`create table ${t} (id serial primary key, w int, i int)`)
    let found = 0; const errors = []
    await Promise.all(Array.from({ length: 16 }, async (_, w) => {
      for (let i = 0; i < 25; i++) {
        try {
          const n = await sql.begin(async tx => {
            const [{ id }] = await tx`insert into ${tx(t)} (w, i) values (${w}, ${i}) returning id`
            const [{ n }] = await tx`select count(*)::int as n from ${tx(t)} where id = ${id}`
            return n
          })
          found += n // not `found += await ...`: that reads found before the await
        } catch (e) { errors.push(e.code || e.message) }
      }
    }))
    const total = await answer(sql`select count(*)::int as n, count(distinct w)::int as w from ${sql(t)}`)
    return { found, errors: [...new Set(errors)], total }
  }
}

async function once (fn, url, tag) {
  const run = new Run(url)
  try {
    return await timeout(fn(run, tag), caseTimeout)
  } catch (e) {
    return { error: e.code || e.message }
  } finally {
    run.close()
    await dropTable(`cmp_${tag}`).catch(() => {})
  }
}

const only = process.env.COMPAT_NODE_CASES ? process.env.COMPAT_NODE_CASES.split(',') : null
for (const [driver, cases] of [['pg', pgCases], ['postgres', pjsCases]]) {
  for (const [name, fn] of Object.entries(cases)) {
    const full = `${driver}/${name}`
    if (only && !only.includes(full)) continue
    const want = await once(fn, direct, newTag())
    const got = await once(fn, target, newTag())
    const a = JSON.stringify(want); const b = JSON.stringify(got)
    const ok = a === b && !('error' in want)
    const detail = ok ? '' : ('error' in want ? `direct failed: ${a}` : `direct ${a} ≠ ${mode} ${b}`)
    console.log(JSON.stringify({ name: full, status: ok ? 'pass' : 'fail', detail, direct: want }))
  }
}
process.exit(0)
