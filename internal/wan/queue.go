package wan

import (
	"context"
	"sync"
	"time"
)

const (
	// chunkSize is the largest read, and the size of pooled buffers.
	chunkSize = 32 << 10

	// queueLimit bounds the bytes queued in one direction of one connection.
	// It plays the part of the TCP window: a link sustains at most
	// queueLimit/latency (16 MiB / 32 ms ≈ 520 MB/s), far above what
	// replication in the lab needs, while a slow receiver can pin at most
	// about twice this much memory (see chunk.cost).
	queueLimit = 16 << 20

	// chunkOverhead is charged per chunk on top of its bytes so that a
	// stream of tiny chunks is bounded too.
	chunkOverhead = 64
)

// chunk is one read from a source connection, or the end of the stream.
type chunk struct {
	data      []byte
	buf       *[]byte // pooled buffer backing data, nil if data was copied
	deliverAt time.Time
	eof       bool // the source half-closed; data is empty
}

// cost is what the chunk counts against queueLimit. Chunks that fill less
// than half of a pooled buffer are copied out of it (see direction.read), so
// the memory held is at most twice the cost.
func (c chunk) cost() int {
	return len(c.data) + chunkOverhead
}

// queue is a FIFO of chunks bounded by total cost, with exactly one producer
// (a direction's reader) and one consumer (its writer).
type queue struct {
	limit int

	// readable and writable hold at most one wake-up token each. A token
	// sent after the other side checked the queue and before it blocks is
	// kept in the channel, so no wake-up is lost; a stale token costs one
	// extra check.
	readable chan struct{}
	writable chan struct{}

	mu    sync.Mutex // guards the fields below
	items []chunk    // items[head:] are queued, oldest first
	head  int
	size  int // sum of cost() over queued items
}

func newQueue(limit int) *queue {
	return &queue{
		limit:    limit,
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
	}
}

// push appends c, blocking while the queue is full. A chunk larger than the
// limit is still accepted into an empty queue so that it cannot deadlock.
// It returns ctx's error if ctx ends first.
func (q *queue) push(ctx context.Context, c chunk) error {
	cost := c.cost()
	for {
		q.mu.Lock()
		if q.size == 0 || q.size+cost <= q.limit {
			if q.head > 0 && len(q.items) == cap(q.items) {
				// Reuse the consumed prefix instead of growing.
				n := copy(q.items, q.items[q.head:])
				clear(q.items[n:])
				q.items = q.items[:n]
				q.head = 0
			}
			q.items = append(q.items, c)
			q.size += cost
			q.mu.Unlock()
			wake(q.readable)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.writable:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pop removes and returns the oldest chunk, blocking while the queue is
// empty. It returns ctx's error if ctx ends first.
func (q *queue) pop(ctx context.Context) (chunk, error) {
	for {
		q.mu.Lock()
		if q.head < len(q.items) {
			c := q.items[q.head]
			q.items[q.head] = chunk{} // drop references for the GC
			q.head++
			if q.head == len(q.items) {
				q.items = q.items[:0]
				q.head = 0
			}
			q.size -= c.cost()
			q.mu.Unlock()
			wake(q.writable)
			return c, nil
		}
		q.mu.Unlock()
		select {
		case <-q.readable:
		case <-ctx.Done():
			return chunk{}, ctx.Err()
		}
	}
}

// wake leaves a token in ch unless one is already there.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
