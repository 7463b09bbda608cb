// Package controller decides what Meridian's control plane does: who is primary, when to fail over,
// how to switch over, when to hold writes. The decision is the pure function [Decide]: from an
// [Input] (the stored topology, the live node and proxy statuses, the loop's timers, the clock, the
// configuration and a pending operator request) it returns a [Decision], a list of [Action]s (write the
// next topology with compare-and-swap, emit events, tell agents to fence, promote, re-point, rejoin,
// stop cleanly) that a thin loop around it carries out. It does no I/O and never reads the clock, so it
// is tested with tables and simulations alone (see DESIGN.md §5 for the protocol it implements).
//
// # Resumable by construction
//
// Everything a multi-step operation needs to go on is in the stored [topology.Topology]: its State,
// Epoch, per-node desired Role and Upstream, and its Operation (kind, old primary and its position,
// target, whether the promotion was ordered, candidates given up). The statuses say how far the world
// has got. So a controller that restarts, or a new leader, computes the same next step from the store
// alone; the loop's [Timers] (when a node was first seen down, its last status) only ever delay a
// failover when they are lost, never cause one (without the old primary's last status, its position
// is estimated from the furthest node, and the event says so). Each decision writes the topology
// before it acts on a node, and the loop acts on nodes only once that write succeeded, so no node is
// told anything the store does not justify (see [Action] for the order and what a failed action
// means).
//
// The epoch, the fencing token, goes up by one in every written topology whose primary, state or
// write pause changed, or that gives up a promotion target (which must then acknowledge it), and never
// goes down.
//
// # What Decide expects of the agents
//
// An agent reports in NodeStatus.Epoch the topology epoch it has acted on, and for a stopped server
// the role its pg_control says (a primary that crashed still reports primary). From the topology
// alone it: fences a node whose desired role is fenced (fast stop, then a standby with no upstream);
// streams a replica from its Upstream; rewinds and streams a rejoining node (saving its WAL beyond
// Node.DivergedAt); starts the primary; sets synchronous_standby_names from SyncStandbys; and promotes
// itself when it is the Operation's target with Promoting set. StopPrimaryClean has no such form (only
// the controller knows when the proxies hold writes), so Decide repeats it until the old primary
// reports a clean shutdown; Promote is repeated too. The other node actions are nudges.
//
// # Phases
//
//	steady ──(primary lease expired, or PostgreSQL down ≥ failover_timeout,
//	│          or operator failover while the primary is unhealthy)──► failing_over/fenced
//	│
//	├──(operator switchover, target passes the pre-check)──► switching/draining
//	└──(pause/resume, RPO guard, rejoin, re-point, sync standbys: stays steady)
//
//	failing_over/fenced     epoch E+1, no primary, old primary's desired role fenced.
//	  │  waits until the old primary's lease has expired (or its agent, still holding it, has acted on
//	  │  E+1 and its PostgreSQL is down or no longer primary) AND every live proxy applied E+1;
//	  │  then chooses the live running replica with the highest received LSN (sync mode: only a
//	  │  synchronous standby), ties by region priority; refuses one beyond max_failover_lag unless
//	  │  forced (failover_refused, reported once; it stays here until that changes)
//	  ▼
//	failing_over/promoting  Operation.Promoting, target recorded; Promote(target) until it reports
//	  │  primary. A target that loses its lease here is fenced and the choice starts again; one that
//	  │  keeps its lease but is not a primary after failover_timeout is fenced with a new epoch
//	  │  (Operation.Abandoned), and nobody else is promoted until it has acknowledged that epoch or
//	  │  lost its lease. When no replica is left, a fenced node running as a standby (the old primary
//	  │  back, first of all) is the fallback candidate, and every other node then rejoins it.
//	  ▼
//	steady                  epoch E+2: new primary, replicas re-pointed, failover_completed naming the
//	                        possibly lost WAL range (old primary's last known position vs the promoted one).
//
//	switching/draining      epoch E+1, writes paused (proxies hold new writes). When every live proxy
//	  │  holds writes: StopPrimaryClean(old). When it reports a clean shutdown, its final LSN is recorded
//	  │  and the target must replay up to it.
//	  ▼
//	switching/promoting     target caught up: Operation.Promoting (the point of no return), Promote(target)
//	  ▼
//	steady                  epoch E+2: target primary, the old primary its replica (no rewind), rest
//	                        re-pointed, writes resumed.
//
// A switchover rolls back (epoch E+2 with the old primary, writes resumed, StartPrimary if it was
// stopped) on switchover_timeout, a lost or stopped target, or an unclean stop of the old primary,
// as long as the target was not told to promote. After that, a target that loses its lease (its
// agent fenced it) is fenced and the switchover rolls back at once; a target that keeps its lease but
// is not a primary at switchover_timeout is fenced with a new epoch (Operation.Abandoned) and the
// rollback waits until it has acknowledged that epoch or lost its lease, so that a late promotion
// cannot make a second writer. If the old primary itself loses its lease before the promotion, the
// switchover becomes an unplanned failover.
//
// Rejoin, in the steady state: a fenced node whose agent is back (a lease again) becomes rejoining,
// streaming from the primary after saving its WAL beyond Node.DivergedAt for salvage and pg_rewind
// (Rejoin action, node_rejoining event); once it reports a streaming replica it is a replica again.
// A live node other than the primary that runs as a primary (or reports a primary's pg_control after
// a crash) is fenced at once, and a replica on a later timeline than the primary's (it cannot follow
// it) rejoins too. A node is back to replica only once it streams on the primary's timeline having
// acted on the current epoch.
//
// RPO: async does nothing more. max_lag holds writes (epoch +1, writes_paused_by rpo_max_lag) while no
// replica in another region streams within the bound and releases them when one does. sync keeps
// SyncStandbys = every replica in another region and tells the primary (SetSyncStandbys).
//
// Every decision that changes the epoch or a node's desired role, or answers a request, emits at
// least one event (recording a switchover's final position is the one silent write); waiting repeats
// no event (a block is reported once, remembered in Operation.Blocked) and is described in
// [Decision.Wait] instead.
package controller
