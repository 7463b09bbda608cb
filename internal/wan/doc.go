// Package wan emulates a wide-area network link in user space: a TCP
// forwarder that accepts on one address, dials a target for each accepted
// connection, and delays (or blackholes) the bytes in between.
//
// The lab and the end-to-end tests put a [Link] between two endpoints that
// would be in different regions in production (PostgreSQL streaming
// replication, etcd peers, a proxy talking to a remote primary), so that they
// see a realistic region-to-region round-trip time, and so that a region can
// be cut off and reconnected.
//
// # Main types
//
//   - [Config] describes a link: where it listens, what it forwards to, the
//     one-way latency and jitter. [OneWay] converts a published round-trip time
//     into the per-direction latency (RTT/2).
//   - [Link] is a running link, created by [New] and stopped by [Link.Close].
//     Its latency can be changed at run time with [Link.SetLatency]; faults
//     are injected with [Link.Partition], [Link.Heal] and [Link.Reset];
//     [Link.Stats] reports cheap counters.
//
// # Delay is relative to each chunk's arrival
//
// Each direction of a forwarded connection has a reader and a writer
// goroutine joined by a bounded queue. The reader stamps every chunk it reads
// with deliverAt = arrival + latency (± jitter); the writer waits until that
// instant and writes the chunk. Because the delay is counted from each
// chunk's own arrival, chunks in flight overlap exactly as packets on a long
// fibre do: a bulk transfer pays the latency once and keeps its bandwidth
// (bounded by the queue, 16 MiB per direction, divided by the latency, just
// as a TCP window bounds a real link). A link that instead slept for the
// latency after reading each chunk would serialise the delays and collapse
// throughput to one chunk per latency (about 1 MB/s at 32 ms), which would
// make replication look hopelessly slow.
//
// Jitter is drawn uniformly from [-Jitter, +Jitter] per chunk. The total
// delay is never negative, and a chunk is never delivered before the chunk
// read ahead of it, so the byte stream stays in order as TCP guarantees.
//
// When the queue is full the reader stops reading, the kernel's receive
// buffer fills, and the sender is slowed by TCP flow control: the link never
// drops or buffers without bound.
//
// # Partition semantics
//
// [Link.Partition] turns the link into a blackhole, as a cut cable or a
// firewall dropping packets would, not as a refused connection:
//
//   - On established connections nothing is delivered in either direction.
//     Bytes sent meanwhile are queued (and, once the queue is full,
//     back-pressured), never dropped, so after [Link.Heal] delivery resumes in
//     order as it would after TCP retransmissions. Chunks whose delivery time
//     passed during the partition are delivered at once on heal.
//   - New connections are accepted by the kernel (the client's connect
//     succeeds) but the target is not dialed and nothing is forwarded until the
//     heal, so clients see their own protocol timeouts rather than an error.
//   - Connections are not closed by a partition; endpoints that give up close
//     them themselves. [Link.Reset] closes every connection when a test wants
//     the effect of a TCP reset instead.
//
// Half-close is forwarded: when one side shuts down its write half, the link
// delivers the queued bytes and then shuts down the write half towards the
// other side; a connection is closed on both sides once both directions are
// done or either side fails.
package wan
