package match

import (
	"context"
	"slices"
	"sync"
)

// MemoryPool is the Pool of a single process: per pool key, tickets sorted
// by rating (for Near) and by creation (for Oldest).
type MemoryPool struct {
	mu      sync.Mutex
	tickets map[string]*memTicket
	pools   map[string]*memPool
}

type memTicket struct {
	t     *Ticket
	state State
}

type memPool struct {
	byRating  []*Ticket // sorted by (Rating, ID)
	byCreated []*Ticket // sorted by (Created, ID)
}

// NewMemoryPool returns an empty pool.
func NewMemoryPool() *MemoryPool {
	return &MemoryPool{tickets: map[string]*memTicket{}, pools: map[string]*memPool{}}
}

var _ Pool = (*MemoryPool)(nil)

func cmpRating(a, b *Ticket) int {
	switch {
	case a.Rating < b.Rating:
		return -1
	case a.Rating > b.Rating:
		return 1
	}
	return cmpString(a.ID, b.ID)
}

func cmpCreated(a, b *Ticket) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmpString(a.ID, b.ID)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func insertSorted(s []*Ticket, t *Ticket, cmp func(a, b *Ticket) int) []*Ticket {
	i, _ := slices.BinarySearchFunc(s, t, cmp)
	return slices.Insert(s, i, t)
}

func removeSorted(s []*Ticket, t *Ticket, cmp func(a, b *Ticket) int) []*Ticket {
	if i, ok := slices.BinarySearchFunc(s, t, cmp); ok {
		return slices.Delete(s, i, i+1)
	}
	return s
}

func (p *MemoryPool) index(t *Ticket) {
	mp := p.pools[t.PoolKey]
	if mp == nil {
		mp = &memPool{}
		p.pools[t.PoolKey] = mp
	}
	mp.byRating = insertSorted(mp.byRating, t, cmpRating)
	mp.byCreated = insertSorted(mp.byCreated, t, cmpCreated)
}

func (p *MemoryPool) unindex(t *Ticket) {
	mp := p.pools[t.PoolKey]
	if mp == nil {
		return
	}
	mp.byRating = removeSorted(mp.byRating, t, cmpRating)
	mp.byCreated = removeSorted(mp.byCreated, t, cmpCreated)
	if len(mp.byRating) == 0 {
		delete(p.pools, t.PoolKey)
	}
}

// Add implements Pool.
func (p *MemoryPool) Add(_ context.Context, t *Ticket) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.tickets[t.ID]; ok && old.state == StateWaiting {
		p.unindex(old.t)
	}
	p.tickets[t.ID] = &memTicket{t: t, state: StateWaiting}
	p.index(t)
	return nil
}

// Remove implements Pool.
func (p *MemoryPool) Remove(_ context.Context, id string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mt, ok := p.tickets[id]
	if !ok || mt.state != StateWaiting {
		return false, nil
	}
	p.unindex(mt.t)
	delete(p.tickets, id)
	return true, nil
}

// Keys implements Pool.
func (p *MemoryPool) Keys(context.Context) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.pools))
	for k := range p.pools {
		keys = append(keys, k)
	}
	return keys, nil
}

// Oldest implements Pool.
func (p *MemoryPool) Oldest(_ context.Context, key string, limit int) ([]*Ticket, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mp := p.pools[key]
	if mp == nil {
		return nil, nil
	}
	return slices.Clone(mp.byCreated[:min(limit, len(mp.byCreated))]), nil
}

// Near implements Pool: it walks outwards from the rating's position, so
// its cost depends on limit, not on the pool's size.
func (p *MemoryPool) Near(_ context.Context, key string, rating, window float64, limit int) ([]*Ticket, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mp := p.pools[key]
	if mp == nil {
		return nil, nil
	}
	s := mp.byRating
	hi, _ := slices.BinarySearchFunc(s, rating, func(t *Ticket, r float64) int {
		switch {
		case t.Rating < r:
			return -1
		case t.Rating > r:
			return 1
		}
		return 0
	})
	lo := hi - 1
	out := make([]*Ticket, 0, limit)
	for len(out) < limit {
		up := hi < len(s) && s[hi].Rating-rating <= window
		down := lo >= 0 && rating-s[lo].Rating <= window
		switch {
		case up && (!down || s[hi].Rating-rating <= rating-s[lo].Rating):
			out = append(out, s[hi])
			hi++
		case down:
			out = append(out, s[lo])
			lo--
		default:
			return out, nil
		}
	}
	return out, nil
}

// Claim implements Pool.
func (p *MemoryPool) Claim(_ context.Context, _ string, ids []string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if mt, ok := p.tickets[id]; !ok || mt.state != StateWaiting {
			return false, nil
		}
	}
	for _, id := range ids {
		mt := p.tickets[id]
		mt.state = StateClaimed
		p.unindex(mt.t)
	}
	return true, nil
}

// Requeue implements Pool.
func (p *MemoryPool) Requeue(_ context.Context, ids []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if mt, ok := p.tickets[id]; ok && mt.state == StateClaimed {
			mt.state = StateWaiting
			p.index(mt.t)
		}
	}
	return nil
}

// Finish implements Pool.
func (p *MemoryPool) Finish(_ context.Context, ids []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if mt, ok := p.tickets[id]; ok && mt.state == StateClaimed {
			delete(p.tickets, id)
		}
	}
	return nil
}

// Waiting implements Pool.
func (p *MemoryPool) Waiting(_ context.Context, id string) (*Ticket, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	mt, ok := p.tickets[id]
	if !ok || mt.state != StateWaiting {
		return nil, false, nil
	}
	return mt.t, true, nil
}
