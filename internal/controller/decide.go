package controller

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/meridiandb/meridian/internal/topology"
)

// Who paused writes (Topology.WritesPausedBy).
const (
	pausedByOperator   = "operator"
	pausedByRPO        = "rpo_max_lag"
	pausedBySwitchover = "switchover"
)

// Decide returns what the controller does next. It is a pure function of its input: no I/O, no clock,
// no randomness, and the same input always gives the same decision. See the package documentation
// for the phases it moves the topology through.
func Decide(in Input) Decision {
	if in.Topology == nil {
		return Decision{Wait: "no topology in the store yet: the cluster is not bootstrapped"}
	}
	d := &decider{in: in, cur: in.Topology, next: in.Topology.Clone(), rpo: in.Config.RPO}
	if in.Request != nil {
		req := *in.Request // a copy: answering it fills in the target, and the input stays untouched
		d.req = &req
	}
	if d.req != nil && d.req.Kind == RequestSetRPO {
		d.setRPO()
	}
	switch d.cur.State {
	case topology.StateFailingOver:
		d.failingOver()
	case topology.StateSwitching:
		d.switching()
	default:
		d.steady()
	}
	if d.req != nil {
		d.refuse("busy", fmt.Sprintf("the controller cannot take a %s request now (topology state %s); retry when it is steady", d.req.Kind, d.cur.State))
	}
	return d.finish()
}

// decider carries one decision under construction.
type decider struct {
	in        Input
	cur, next *topology.Topology
	rpo       RPO
	req       *Request // the pending request; nil once answered
	events    []topology.Event
	acts      []Action // actions after the topology write and the events
	wait      []string
	// newToken: the next topology needs a new epoch though its primary and write state stay (a
	// candidate abandoned: the epoch it must acknowledge).
	newToken bool
}

func (d *decider) status(name string) (topology.NodeStatus, bool) {
	st, ok := d.in.Nodes[name]
	return st, ok
}

func (d *decider) waitf(format string, args ...any) {
	d.wait = append(d.wait, fmt.Sprintf(format, args...))
}

func (d *decider) event(kind topology.EventKind, node, msg string, details map[string]string) {
	d.events = append(d.events, topology.Event{Kind: kind, Node: node, Message: msg, Details: details})
}

func (d *decider) act(a Action) { d.acts = append(d.acts, a) }

// refuse answers the pending request with an error and an event.
func (d *decider) refuse(code, reason string) {
	if d.req == nil {
		return
	}
	kind := topology.EventRequestRefused
	if d.req.Kind == RequestSwitchover {
		kind = topology.EventSwitchoverRefused
	}
	d.event(kind, d.req.To, reason, map[string]string{"request": string(d.req.Kind), "code": code})
	d.act(Refuse{Code: code, Reason: reason})
	d.req = nil
}

// setRole sets a node's desired role and upstream in the next topology.
func (d *decider) setRole(name string, role topology.Role, upstream string) {
	for i := range d.next.Nodes {
		if d.next.Nodes[i].Name == name {
			d.next.Nodes[i].Role, d.next.Nodes[i].Upstream = role, upstream
		}
	}
}

func (d *decider) nodeRef(name string) *topology.Node {
	for i := range d.next.Nodes {
		if d.next.Nodes[i].Name == name {
			return &d.next.Nodes[i]
		}
	}
	return nil
}

// finish turns the next topology, events and actions into the decision: the topology is written only
// when it changed, with the epoch bumped when the primary or the write state changed.
func (d *decider) finish() Decision {
	var out Decision
	out.Wait = strings.Join(d.wait, "; ")
	probe := *d.next
	probe.UpdatedAt = d.cur.UpdatedAt
	epoch := d.cur.Epoch
	if !reflect.DeepEqual(&probe, d.cur) {
		if d.newToken || d.next.Primary != d.cur.Primary || d.next.WritesPaused != d.cur.WritesPaused || d.next.State != d.cur.State {
			d.next.Epoch = d.cur.Epoch + 1
		}
		d.next.UpdatedAt = d.in.Now
		epoch = d.next.Epoch
		out.Actions = append(out.Actions, WriteTopology{Topology: d.next})
	}
	for _, e := range d.events {
		e.Epoch, e.At = epoch, d.in.Now
		out.Actions = append(out.Actions, EmitEvent{Event: e})
	}
	out.Actions = append(out.Actions, d.acts...)
	return out
}

// setRPO answers a request to change the RPO mode; it applies in any state, from this decision on.
func (d *decider) setRPO() {
	r := d.req.RPO
	if err := r.validate(); err != nil {
		d.refuse("invalid_rpo", err.Error())
		return
	}
	details := map[string]string{"mode": string(r.Mode), "previous": string(d.rpo.Mode)}
	if r.Mode == RPOMaxLag {
		details["max_lag"] = r.MaxLag.String()
	}
	d.event(topology.EventRPOChanged, "", "RPO mode changed to "+string(r.Mode), details)
	d.act(SetRPO{RPO: r})
	d.rpo = r
	d.req = nil
}
