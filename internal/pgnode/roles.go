package pgnode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridiandb/meridian/internal/topology"
)

// Promote turns a running standby into a primary with pg_promote() and returns once the server has left
// recovery and accepts writes. Promoting a primary is an error.
func (n *Node) Promote(ctx context.Context) error {
	n.op.Lock()
	defer n.op.Unlock()
	if !n.Running() {
		return fmt.Errorf("promote %s: %w", n.cfg.Name, ErrNotRunning)
	}
	start := time.Now()
	conn, err := n.Connect(ctx, "")
	if err != nil {
		return fmt.Errorf("promote %s: %w", n.cfg.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("promote %s: %w", n.cfg.Name, err)
	}
	if !inRecovery {
		return fmt.Errorf("promote %s: already a primary", n.cfg.Name)
	}
	// pg_promote(wait => true, wait_seconds) returns once recovery has ended, or false on timeout.
	waitSeconds := 60
	if dl, ok := ctx.Deadline(); ok {
		waitSeconds = max(1, int(time.Until(dl).Seconds()))
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, $1)", waitSeconds).Scan(&ok); err != nil {
		return fmt.Errorf("promote %s: %w", n.cfg.Name, err)
	}
	if !ok {
		return fmt.Errorf("promote %s: still in recovery after %d s (log: %s)", n.cfg.Name, waitSeconds, n.LastLog(10))
	}
	n.setUpstream(nil)
	n.log.Info("promoted", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Demote shuts a running primary down cleanly (fast mode: open transactions are rolled back, the
// shutdown checkpoint is written and sent to connected standbys) and restarts it as a standby of
// upstream. It returns the location of the shutdown checkpoint: a replica whose replay position has
// passed it holds every committed transaction of the old primary, which makes the planned switchover
// lossless and needs no pg_rewind.
//
// For a switchover, demote the old primary with the chosen replica as its upstream (it streams from
// the still-standby replica, a cascade), wait until the replica has replayed past the returned LSN,
// then promote the replica: the demoted server follows it onto the new timeline.
func (n *Node) Demote(ctx context.Context, upstream Endpoint) (topology.LSN, error) {
	n.op.Lock()
	defer n.op.Unlock()
	if err := n.stop(ctx, Fast); err != nil {
		return 0, fmt.Errorf("demote %s: %w", n.cfg.Name, err)
	}
	ckpt, err := n.checkpointLSN(ctx)
	if err != nil {
		return 0, fmt.Errorf("demote %s: %w", n.cfg.Name, err)
	}
	n.setUpstream(&upstream)
	if err := n.start(ctx); err != nil {
		return ckpt, fmt.Errorf("demote %s: %w", n.cfg.Name, err)
	}
	n.log.Info("demoted", "upstream", upstream.String(), "shutdown_checkpoint", ckpt.String())
	return ckpt, nil
}

// checkpointLSN reads the latest checkpoint location of a stopped server from pg_controldata.
func (n *Node) checkpointLSN(ctx context.Context) (topology.LSN, error) {
	out, err := n.runProgram(ctx, "pg_controldata", "-D", n.DataDir())
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Latest checkpoint location:"); ok {
			return topology.ParseLSN(v)
		}
	}
	return 0, errors.New("pg_controldata: no \"Latest checkpoint location\" line")
}

// Repoint makes a standby stream from a new upstream without re-cloning: it rewrites primary_conninfo
// and reloads the configuration, which restarts the WAL receiver. A stopped node only records the new
// upstream for its next start.
func (n *Node) Repoint(ctx context.Context, upstream Endpoint) error {
	n.op.Lock()
	defer n.op.Unlock()
	if _, standby := n.Upstream(); !standby {
		return fmt.Errorf("repoint %s: it is a primary; use Demote or Rewind to make it a standby", n.cfg.Name)
	}
	n.setUpstream(&upstream)
	if err := n.writeRunConfig(); err != nil {
		return fmt.Errorf("repoint %s: %w", n.cfg.Name, err)
	}
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil {
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			return fmt.Errorf("repoint %s: reload: %w", n.cfg.Name, err)
		}
	}
	n.log.Info("repointed", "upstream", upstream.String())
	return ctx.Err()
}

// Rewind makes a former primary (stopped, crashed or running) a standby of source after a failover:
// it stops the server if needed, runs pg_rewind against source to undo the WAL the old primary wrote
// after the timelines diverged (pg_rewind first runs crash recovery if the server was not shut down
// cleanly), and starts it streaming from source. Rewinding a node that has not diverged is harmless.
func (n *Node) Rewind(ctx context.Context, source Endpoint) error {
	n.op.Lock()
	defer n.op.Unlock()
	if err := n.stop(ctx, Fast); err != nil {
		return fmt.Errorf("rewind %s: %w", n.cfg.Name, err)
	}
	// pg_rewind reads the source's timeline from its control file, which a freshly promoted server
	// updates only at its first checkpoint after promotion (spread out, possibly minutes away); until
	// then pg_rewind wrongly concludes "no rewind required". Checkpoint the source first, as Patroni does.
	if err := n.checkpointSource(ctx, source); err != nil {
		return fmt.Errorf("rewind %s: %w", n.cfg.Name, err)
	}
	start := time.Now()
	out, err := n.runProgram(ctx, "pg_rewind", "--target-pgdata="+n.DataDir(),
		"--source-server="+n.conninfo(source, "dbname=postgres"), "--no-sync")
	if err != nil {
		return fmt.Errorf("rewind %s from %s: %w", n.cfg.Name, source, err)
	}
	// pg_rewind copied the source's configuration files; put ours back.
	if err := n.writeBaseConfig(); err != nil {
		return fmt.Errorf("rewind %s: %w", n.cfg.Name, err)
	}
	n.setUpstream(&source)
	n.log.Info("rewound", "source", source.String(), "took", time.Since(start).Round(time.Millisecond),
		"pg_rewind", lastLines(string(out), 1))
	if err := n.start(ctx); err != nil {
		return fmt.Errorf("rewind %s: %w", n.cfg.Name, err)
	}
	return nil
}

// checkpointSource runs CHECKPOINT on the server at ep.
func (n *Node) checkpointSource(ctx context.Context, ep Endpoint) error {
	conn, err := pgx.Connect(ctx, n.conninfo(ep, "dbname=postgres"))
	if err != nil {
		return fmt.Errorf("connect to rewind source %s: %w", ep, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint rewind source %s: %w", ep, err)
	}
	return nil
}
