// Package store keeps the control plane's state in etcd (https://etcd.io/docs/v3.6/learning/api/):
// the [topology.Topology] the controller leader publishes, the statuses agents and proxies report
// under their leases, the event log, and the controller election.
//
// # Layout
//
// Every key of a Meridian cluster lives under /meridian/<cluster>/:
//
//	topology          the Topology (JSON); written only with compare-and-swap on its mod revision
//	nodes/<name>      a NodeStatus (JSON), under the reporting agent's lease
//	proxies/<name>    a ProxyStatus (JSON), under the reporting proxy's lease
//	events/<seq>      an Event (JSON); seq zero-padded to 20 digits, so key order is seq order
//	event-seq         the last assigned event seq (decimal), the counter appends swap
//	leader/<lease>    concurrency.Election keys of the controller candidates; the oldest leads
//
// # Rules
//
//   - The topology is written only by [Store.PutTopology], in a transaction that compares its mod
//     revision with the one the writer read (ErrConflict otherwise) and, for a controller, that its
//     leader key still exists with the create revision it won with (ErrNotLeader otherwise). Two
//     controllers can therefore never both write: the deposed one's transaction fails.
//   - Statuses are leased ([Session]): when an agent dies or is cut off from the etcd majority its
//     status disappears after the lease TTL, which is what the controller detects. The agent itself
//     knows from [Session.Deadline] and [Session.Lost] when it must have fenced, before that expiry.
//   - Events get a store-assigned seq, strictly increasing and gap-free, and only the newest
//     EventRetention are kept.
//
// Main types: [Config] (how to reach etcd), [Store], [Session], [Election] and [Leadership]; and
// [Embedded] / [StartCluster] to run etcd members in-process for tests, the lab and single-machine use.
package store
