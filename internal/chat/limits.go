package chat

import (
	"sync"
	"time"
)

// limiter is a token bucket per player: rate tokens a second, up to burst.
// It is local to the node; a player's socket stays on one node, so that is
// where their sends arrive.
type limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	ops     int
}

type bucket struct {
	tokens float64
	last   time.Time
}

// sweepEvery is how many calls pass between sweeps of idle buckets, which
// keeps the map as large as the set of recently active players.
const sweepEvery = 4096

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(max(burst, 1)), now: now, buckets: map[string]*bucket{}}
}

// allow takes a token for user, or reports how long until one is free.
func (l *limiter) allow(user string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops++
	if l.ops%sweepEvery == 0 {
		l.sweep(now)
	}
	b := l.buckets[user]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[user] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed*l.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// sweep drops buckets that have refilled: forgetting them changes nothing.
func (l *limiter) sweep(now time.Time) {
	for user, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, user)
		}
	}
}
