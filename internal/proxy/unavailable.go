package proxy

import (
	"fmt"
	"strings"
	"time"
)

// This file words the errors a client gets when no server can take its statement, and the node
// list of /readyz: each names the nodes and why they cannot serve (the poller's last error), so
// that an operator reading one of them needs nothing else to start looking.

// nodeSummary describes one node for a person: its role, or why it cannot serve.
func (p *Proxy) nodeSummary(snap *Snapshot, n NodeState, now time.Time) string {
	head := fmt.Sprintf("node %s (region %s, %s): ", n.Name, n.Region, n.Address)
	switch {
	case n.Up && n.Name == snap.Primary:
		return head + "up, primary"
	case n.Up && n.Primary:
		return head + "up, claims to be the primary as another node does: writes are refused until one steps down"
	case n.Up && p.lag.tooFarBehind(n.Name):
		return head + fmt.Sprintf("up, replica %v behind, over max_replica_lag (%v): no reads", p.lag.state(n.Name).Lag.Round(time.Millisecond), p.cfg.MaxReplicaLag)
	case n.Up:
		return head + "up, replica"
	case n.Failures == 0:
		return head + "not checked yet"
	}
	return head + fmt.Sprintf("down for %v (%d failed %s): %s", now.Sub(n.DownSince).Round(100*time.Millisecond),
		n.Failures, plural(n.Failures, "check", "checks"), n.Err)
}

// nodeReport is nodeSummary for every node, one per line.
func (p *Proxy) nodeReport(snap *Snapshot) string {
	now := time.Now()
	lines := make([]string, len(snap.Nodes))
	for i, n := range snap.Nodes {
		lines[i] = p.nodeSummary(snap, n, now)
	}
	return strings.Join(lines, "\n")
}

// noServerError is the error of a statement that no node can take: it names the nodes that do not
// answer (and those that answer but cannot serve), with each node's state and last error in DETAIL.
func (p *Proxy) noServerError(snap *Snapshot) *pgError {
	var down, behind, claim []string
	for _, n := range snap.Nodes {
		switch {
		case !n.Up:
			down = append(down, n.Name)
		case n.Primary && n.Name != snap.Primary:
			claim = append(claim, n.Name)
		case p.lag.tooFarBehind(n.Name):
			behind = append(behind, n.Name)
		}
	}
	var why []string
	if len(down) > 0 {
		why = append(why, fmt.Sprintf("%s %s not answer this proxy (region %s)", nodeList(down), plural(len(down), "does", "do"), p.cfg.Region))
	}
	if len(claim) > 0 {
		why = append(why, fmt.Sprintf("%s all claim to be the primary", nodeList(claim)))
	}
	if len(behind) > 0 {
		why = append(why, fmt.Sprintf("%s %s too far behind (max_replica_lag %v)", nodeList(behind), plural(len(behind), "is", "are"), p.cfg.MaxReplicaLag))
	}
	if len(why) == 0 {
		why = append(why, "no node can serve this statement") // not expected: every case is named above
	}
	e := &pgError{Severity: "ERROR", Code: codeCannotConnectNow,
		Message: "no server is available: " + strings.Join(why, "; "),
		Detail:  p.nodeReport(snap)}
	if len(down) > 0 {
		e.Hint = "Check the nodes' addresses in the proxy's configuration (nodes), that PostgreSQL runs there and accepts " +
			"connections from this host, and that monitor_user can log in; the proxy logs each node's failures."
	}
	return e
}

// readRefused is the error of a read that needs the primary (its position, or its data when no replica
// has caught up) while the primary cannot be reached. need says what the read needed and why; the
// message then says why it cannot be had. Reads that need no primary still work, which the hint says.
func (p *Proxy) readRefused(snap *Snapshot, need, detail string) *pgError {
	e := &pgError{Severity: "ERROR", Code: codeCannotConnectNow, Hint: readRefusedHint}
	why := "no primary is known: the cluster is between primaries or the primary is down"
	lastErr := p.nodeReport(snap)
	for _, n := range snap.Nodes {
		if n.LastSeenPrimary && !n.Up {
			why = fmt.Sprintf("the primary %s (region %s) does not answer this proxy (region %s)", n.Name, n.Region, p.cfg.Region)
			lastErr = "last error from the primary: " + n.Err
			break
		}
	}
	e.Message = need + ", and " + why
	e.Detail = lastErr
	if detail != "" {
		e.Detail = detail + "\n" + lastErr
	}
	return e
}

// readRefusedHint is the hint of a read refused because it needs the primary, which cannot be reached.
const readRefusedHint = "Reads in eventual consistency are still served by the replicas (SET meridian.consistency = eventual); " +
	"this read can be served again once the primary answers or another node is promoted."

// nodeList names nodes in a sentence: "node a", "nodes a and b", "nodes a, b and c".
func nodeList(names []string) string {
	if len(names) == 1 {
		return "node " + names[0]
	}
	return "nodes " + strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
