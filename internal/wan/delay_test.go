package wan

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestDeliveryTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	tests := []struct {
		name    string
		arrival time.Time
		prev    time.Time
		latency time.Duration
		offset  time.Duration
		want    time.Time
	}{
		{name: "no delay", arrival: t0, want: t0},
		{name: "latency from arrival", arrival: t0, latency: 32 * ms, want: t0.Add(32 * ms)},
		{name: "positive jitter", arrival: t0, latency: 32 * ms, offset: 5 * ms, want: t0.Add(37 * ms)},
		{name: "negative jitter", arrival: t0, latency: 32 * ms, offset: -5 * ms, want: t0.Add(27 * ms)},
		{name: "never negative", arrival: t0, latency: 2 * ms, offset: -5 * ms, want: t0},
		{
			// Each chunk is delayed from its own arrival, not after the
			// previous delivery: overlapping in flight keeps bandwidth.
			name: "overlaps previous chunk", arrival: t0.Add(ms), prev: t0.Add(32 * ms),
			latency: 32 * ms, want: t0.Add(33 * ms),
		},
		{
			name: "never before previous chunk", arrival: t0.Add(ms), prev: t0.Add(40 * ms),
			latency: 32 * ms, offset: -5 * ms, want: t0.Add(40 * ms),
		},
		{
			name: "latency lowered at run time", arrival: t0.Add(10 * ms), prev: t0.Add(100 * ms),
			latency: 10 * ms, want: t0.Add(100 * ms),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := deliveryTime(tt.arrival, tt.prev, tt.latency, tt.offset)
			if !got.Equal(tt.want) {
				t.Errorf("deliveryTime() = +%v, want +%v", got.Sub(t0), tt.want.Sub(t0))
			}
		})
	}
}

func TestJitterOffsetRange(t *testing.T) {
	d := delay{latency: 10 * time.Millisecond, jitter: 3 * time.Millisecond}
	var sawNeg, sawPos bool
	for range 10000 {
		o := d.offset()
		if o < -d.jitter || o > d.jitter {
			t.Fatalf("offset %v outside [-%v, %v]", o, d.jitter, d.jitter)
		}
		sawNeg = sawNeg || o < 0
		sawPos = sawPos || o > 0
	}
	if !sawNeg || !sawPos {
		t.Errorf("offsets not spread on both sides of zero (negative %v, positive %v)", sawNeg, sawPos)
	}
	if o := (delay{latency: time.Second}).offset(); o != 0 {
		t.Errorf("offset without jitter = %v, want 0", o)
	}
}

func TestQueueBoundedAndOrdered(t *testing.T) {
	// synctest tells when the pushing goroutine is durably blocked, without
	// waiting on the clock.
	synctest.Test(t, testQueueBoundedAndOrdered)
}

func testQueueBoundedAndOrdered(t *testing.T) {
	ctx := context.Background()
	q := newQueue(3 * (10 + chunkOverhead))
	mk := func(b byte) chunk { return chunk{data: []byte{b, b, b, b, b, b, b, b, b, b}} }
	for i := range 3 {
		if err := q.push(ctx, mk(byte(i))); err != nil {
			t.Fatal(err)
		}
	}

	// Full: a fourth push blocks until a pop makes room.
	pushed := make(chan error, 1)
	go func() { pushed <- q.push(ctx, mk(3)) }()
	synctest.Wait()
	select {
	case err := <-pushed:
		t.Fatalf("push into a full queue returned %v without blocking", err)
	default:
	}
	for i := range 4 {
		c, err := q.pop(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c.data[0] != byte(i) {
			t.Fatalf("pop %d returned chunk %d", i, c.data[0])
		}
		if i == 0 {
			if err := <-pushed; err != nil {
				t.Fatalf("blocked push: %v", err)
			}
		}
	}

	// A chunk larger than the limit still goes into an empty queue.
	if err := q.push(ctx, chunk{data: make([]byte, 1000)}); err != nil {
		t.Fatal(err)
	}

	// Blocked calls return when their context ends.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := q.push(cctx, mk(9)); !errors.Is(err, context.Canceled) {
		t.Errorf("push on a full queue with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := q.pop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := q.pop(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("pop on an empty queue with a canceled context = %v, want context.Canceled", err)
	}
}
