// Package backoff computes the waits between retries, for every retry loop
// in the tree: exponential from an initial delay, doubling up to a cap, with
// the jitter the caller chooses.
//
// A Policy gives the delay of the n-th retry; a Backoff counts retries for
// a loop that needs no attempt number of its own. Neither sleeps: Sleep
// waits a delay or until a context ends.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: Initial before the first retry,
// doubling before each further one, never above Max. A zero Max means no
// cap; a zero Initial means no wait at all.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// Delay is the wait before retry n (n >= 1 is the first retry), without
// jitter. Values of n below 1 are taken as 1.
func (p Policy) Delay(n int) time.Duration {
	d := p.Initial
	for i := 1; i < n && d > 0 && (p.Max <= 0 || d < p.Max); i++ {
		d *= 2
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	return d
}

// Full is d with full jitter: uniform in [0, d]. Concurrent retriers that
// collided spread out over the whole window.
func Full(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// Spread is d with proportional jitter: uniform in [d*(1-frac), d*(1+frac)].
// frac is clamped to [0, 1].
func Spread(d time.Duration, frac float64) time.Duration {
	frac = min(max(frac, 0), 1)
	w := time.Duration(float64(d) * frac)
	if d <= 0 || w <= 0 {
		return max(d, 0)
	}
	return d - w + rand.N(2*w+1)
}

// Backoff counts the retries of one loop. The zero value of a Backoff with
// a Policy is ready; it is not safe for concurrent use.
type Backoff struct {
	Policy
	n int
}

// Next counts a retry and returns its delay, without jitter.
func (b *Backoff) Next() time.Duration {
	b.n++
	return b.Delay(b.n)
}

// After counts a retry and returns a channel that fires after its delay.
func (b *Backoff) After() <-chan time.Time { return time.After(b.Next()) }

// Reset starts the count again: the next retry waits Initial.
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
