package server

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/room"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// stallProxy forwards TCP to an upstream address and can stop forwarding
// (both ways, connections kept open): a NATS server that stopped answering.
type stallProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	open     chan struct{} // closed while forwarding
}

func newStallProxy(t *testing.T, upstream string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, upstream: upstream, open: make(chan struct{})}
	close(p.open)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	return p
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.open
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	p.open = make(chan struct{})
	p.mu.Unlock()
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	close(p.open)
	p.mu.Unlock()
}

// eventer publishes a room event on every tick and records when each tick
// ran.
type eventer struct {
	mu    sync.Mutex
	ticks []time.Time
}

func (e *eventer) Init(*room.Handle, []byte) (room.Settings, error) { return room.Settings{}, nil }
func (e *eventer) JoinAttempt(*room.Handle, room.Player, []byte) (bool, string) {
	return true, ""
}
func (e *eventer) Join(*room.Handle, room.Player)              {}
func (e *eventer) Leave(*room.Handle, room.Player, string)     {}
func (e *eventer) Terminate(*room.Handle, string)              {}
func (e *eventer) Signal(*room.Handle, []byte) ([]byte, error) { return nil, nil }
func (e *eventer) Tick(h *room.Handle, tick uint32, _ []room.Input) {
	e.mu.Lock()
	e.ticks = append(e.ticks, time.Now())
	e.mu.Unlock()
	_ = h.PublishEvent("tick", []byte(`{"n":1}`))
}

// intervalsP99 returns the 99th percentile gap between ticks from index
// from on, and how many ticks that covered.
func (e *eventer) intervalsP99(from int) (time.Duration, int) {
	e.mu.Lock()
	ticks := slices.Clone(e.ticks[from:])
	e.mu.Unlock()
	var gaps []time.Duration
	for i := 1; i < len(ticks); i++ {
		gaps = append(gaps, ticks[i].Sub(ticks[i-1]))
	}
	slices.Sort(gaps)
	if len(gaps) == 0 {
		return 0, 0
	}
	return gaps[len(gaps)*99/100], len(ticks)
}

func (e *eventer) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.ticks)
}

// A NATS server that stops answering does not slow a room's tick: the room
// hands its events over without waiting, and what the full queue cannot
// take goes to the dead-letter path, counted.
func TestStalledNATSDoesNotSlowTheTick(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	natsCfg := testConfig(t)
	natsCfg.NATS.Addr = "127.0.0.1:0"
	natsHost := startServer(t, natsCfg)
	defer shutdown(t, natsHost)
	proxy := newStallProxy(t, natsHost.Addrs().NATS)

	cfg := testConfig(t)
	cfg.NATS.URL = "nats://" + proxy.ln.Addr().String()
	cfg.Events.QueueSize = 32
	logic := &eventer{}
	s := startServer(t, cfg, func(r *room.Registry) {
		r.MustRegister("eventer", func() room.Logic { return logic })
	})
	c := player(t, s, "ticker", rally.Options{})
	if _, err := c.CreateRoom(ctx, &rtv1.CreateRoom{Handler: "eventer", TickRate: 50}); err != nil {
		t.Fatal(err)
	}
	waitTicks := func(n int) {
		t.Helper()
		eventually(t, 30*time.Second, "ticks", func() (bool, string) { return logic.count() >= n, "" })
	}
	const phase = 150 // ticks: 3 s at 50 Hz
	waitTicks(phase)
	healthy, _ := logic.intervalsP99(0)

	proxy.stall()
	start := logic.count()
	waitTicks(start + phase)
	stalled, n := logic.intervalsP99(start)
	overflowed := metricValue(t, s, "rally_roomevents_queue_full_total", "", "")
	proxy.resume()
	defer shutdown(t, s)

	t.Logf("tick period p99: %v healthy, %v with NATS stalled (%d ticks); %v events overflowed", healthy, stalled, n, overflowed)
	if overflowed == 0 {
		t.Fatal("the event queue never filled: the stall was not exercised")
	}
	// 20 ms period; a publish that waited would add 100 ms per tick.
	if stalled > healthy+40*time.Millisecond {
		t.Fatalf("tick period p99 %v with NATS stalled, %v healthy", stalled, healthy)
	}
}
