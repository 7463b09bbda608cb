package wan

import (
	"math/rand/v2"
	"time"
)

// delay is the link's current latency setting; a Link swaps the whole value
// atomically so that a reader never sees a latency from one SetLatency call
// with the jitter of another.
type delay struct {
	latency time.Duration
	jitter  time.Duration
}

// offset draws a jitter offset uniformly from [-jitter, +jitter].
func (d delay) offset() time.Duration {
	if d.jitter <= 0 {
		return 0
	}
	// The top-level math/rand/v2 functions are safe for concurrent use and
	// need no seeding; jitter is not security-sensitive.
	return time.Duration(rand.Int64N(2*int64(d.jitter)+1)) - d.jitter
}

// deliveryTime is when a chunk that arrived at arrival may be delivered,
// given the latency, a jitter offset, and the delivery time of the chunk
// read before it in the same direction (zero for the first one).
//
// The delay is counted from the chunk's own arrival, never from the previous
// delivery, so consecutive chunks overlap in flight and bandwidth is kept. It
// is never negative (the link never delivers early) and never earlier than
// prev, so jitter cannot reorder the byte stream.
func deliveryTime(arrival, prev time.Time, latency, offset time.Duration) time.Time {
	d := max(latency+offset, 0)
	at := arrival.Add(d)
	if at.Before(prev) {
		return prev
	}
	return at
}
