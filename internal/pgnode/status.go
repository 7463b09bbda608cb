package pgnode

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/topology"
)

// Role is what a server observes itself to be (pg_is_in_recovery()).
type Role string

const (
	RolePrimary Role = "primary"
	RoleReplica Role = "replica"
)

// Status is a server's replication state as it reports it.
type Status struct {
	Role     Role
	Timeline uint32
	// Current is the primary's pg_current_wal_lsn(); zero on a replica.
	Current topology.LSN
	// Received and Replayed are a replica's last WAL position received (flushed) from its upstream and
	// applied; zero on a primary.
	Received topology.LSN
	Replayed topology.LSN
	// ReplayLag is how far behind the replica's applied state is in time: zero when it has replayed
	// everything it received, else the age of the last replayed transaction.
	ReplayLag time.Duration
	// Streaming is true when the WAL receiver is connected and streaming; Upstream names the server
	// it streams from (host:port as configured, possibly a WAN link).
	Streaming bool
	Upstream  string
	// Replicas are the standbys streaming from this server (pg_stat_replication).
	Replicas []ReplicaStat
}

// ReplicaStat is one row of pg_stat_replication: a standby streaming from this server.
type ReplicaStat struct {
	Name      string // application_name, the standby's node name
	State     string // startup, catchup, streaming, backup or stopping
	Sent      topology.LSN
	Flushed   topology.LSN
	Replayed  topology.LSN
	ReplayLag time.Duration // as measured by the primary from standby feedback
	SyncState string
}

// Connect opens a pgx connection to the node as the superuser (database "postgres" when empty).
func (n *Node) Connect(ctx context.Context, database string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, n.ConnString(database))
	if err != nil {
		return nil, fmt.Errorf("connect to %s at %s: %w", n.cfg.Name, n.Endpoint(), err)
	}
	return conn, nil
}

// statusQuery reads everything in one round trip. Functions that fail during recovery are guarded by
// CASE, which PostgreSQL evaluates lazily for volatile functions. The replay position is read before
// the receive position (r is scanned before the lateral v, which refers to it): WAL received and
// replayed between two reads in the other order would show replay beyond receive.
const statusQuery = `
SELECT r.rec,
       CASE WHEN r.rec THEN NULL ELSE pg_current_wal_lsn()::text END,
       v.recv::text,
       r.replay::text,
       CASE WHEN NOT r.rec OR v.recv IS NULL OR r.replay >= v.recv THEN 0
            ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8,
       CASE WHEN r.rec THEN COALESCE(w.received_tli, (pg_control_checkpoint()).timeline_id)
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       COALESCE(w.status = 'streaming', false),
       COALESCE(w.sender_host || ':' || w.sender_port, '')
FROM (SELECT pg_is_in_recovery() AS rec, pg_last_wal_replay_lsn() AS replay) r
CROSS JOIN LATERAL (SELECT pg_last_wal_receive_lsn() AS recv, r.replay AS after_replay) v
LEFT JOIN pg_stat_wal_receiver w ON true`

const replicasQuery = `
SELECT application_name, COALESCE(state, ''), COALESCE(sent_lsn::text, '0/0'), COALESCE(flush_lsn::text, '0/0'),
       COALESCE(replay_lsn::text, '0/0'), COALESCE(extract(epoch FROM replay_lag), 0)::float8, COALESCE(sync_state, '')
FROM pg_stat_replication ORDER BY application_name`

// Status connects to the server and reports its replication state.
func (n *Node) Status(ctx context.Context) (Status, error) {
	conn, err := n.Connect(ctx, "")
	if err != nil {
		return Status{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return QueryStatus(ctx, conn)
}

// QueryStatus reads a server's replication state over an existing connection (the agent keeps one
// open and calls this on every tick).
func QueryStatus(ctx context.Context, conn *pgx.Conn) (Status, error) {
	var (
		st                          Status
		rec, streaming              bool
		current, received, replayed *string
		lagSec                      float64
		tli                         int64
	)
	err := conn.QueryRow(ctx, statusQuery).Scan(&rec, &current, &received, &replayed, &lagSec, &tli, &streaming, &st.Upstream)
	if err != nil {
		return Status{}, fmt.Errorf("query status: %w", err)
	}
	st.Role = RolePrimary
	if rec {
		st.Role = RoleReplica
	}
	st.Timeline = uint32(tli)
	st.Streaming = streaming
	st.ReplayLag = seconds(lagSec)
	for _, f := range []struct {
		src *string
		dst *topology.LSN
	}{{current, &st.Current}, {received, &st.Received}, {replayed, &st.Replayed}} {
		if f.src == nil {
			continue
		}
		if *f.dst, err = topology.ParseLSN(*f.src); err != nil {
			return Status{}, fmt.Errorf("query status: %w", err)
		}
	}
	rows, err := conn.Query(ctx, replicasQuery)
	if err != nil {
		return Status{}, fmt.Errorf("query pg_stat_replication: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r ReplicaStat
		var sent, flushed, replayed string
		var lag float64
		if err := rows.Scan(&r.Name, &r.State, &sent, &flushed, &replayed, &lag, &r.SyncState); err != nil {
			return Status{}, fmt.Errorf("query pg_stat_replication: %w", err)
		}
		r.ReplayLag = seconds(lag)
		for _, f := range []struct {
			src string
			dst *topology.LSN
		}{{sent, &r.Sent}, {flushed, &r.Flushed}, {replayed, &r.Replayed}} {
			if *f.dst, err = topology.ParseLSN(f.src); err != nil {
				return Status{}, fmt.Errorf("query pg_stat_replication: %w", err)
			}
		}
		st.Replicas = append(st.Replicas, r)
	}
	if err := rows.Err(); err != nil {
		return Status{}, fmt.Errorf("query pg_stat_replication: %w", err)
	}
	return st, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
