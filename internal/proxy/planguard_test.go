package proxy

import (
	"testing"
	"time"
)

// TestPlanGuard: the decision of the auto_prepare plan guard, on timings alone.
func TestPlanGuard(t *testing.T) {
	ms := func(v ...float64) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x * float64(time.Millisecond))
		}
		return d
	}
	for _, tc := range []struct {
		name    string
		runs    []time.Duration
		stopsAt int // 1-based run after which the text stops being prepared; 0: never
	}{
		{"steady", ms(20, 21, 19, 22, 20, 20, 21, 19, 20, 22, 21, 20), 0},
		{"generic plan 5x slower", ms(20, 21, 19, 22, 20, 100, 110, 105, 100), 8},
		{"noise: slow runs now and then", ms(20, 21, 19, 22, 20, 60, 20, 20, 60, 20, 21, 60, 20, 20), 0},
		{"fast statement: 2x but under the floor", ms(0.3, 0.3, 0.3, 0.3, 0.3, 1.5, 1.5, 1.5, 1.5, 1.5), 0},
		{"a slow first run does not raise the baseline", ms(300, 20, 20, 20, 20, 100, 100, 100), 8},
		{"slower, but less than twice", ms(20, 20, 20, 20, 20, 35, 35, 35, 35, 35), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g planGuard
			stopped := 0
			for i, d := range tc.runs {
				if g.observe(d) && stopped == 0 {
					stopped = i + 1
				}
			}
			if stopped != tc.stopsAt {
				t.Errorf("stopped after run %d, want %d (baseline %v)", stopped, tc.stopsAt, g.baseline())
			}
		})
	}
}
