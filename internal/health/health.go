// Package health answers the process's probes: liveness (the process
// serves) and readiness (every dependency answers and the process is not
// shutting down).
package health

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Check reports whether one dependency answers.
type Check func(ctx context.Context) error

// Checker aggregates named checks into a readiness verdict.
type Checker struct {
	timeout  time.Duration
	mu       sync.Mutex
	names    []string
	checks   []Check
	started  atomic.Bool
	draining atomic.Bool
}

// NewChecker returns a Checker whose checks each get timeout to answer.
func NewChecker(timeout time.Duration) *Checker {
	return &Checker{timeout: timeout}
}

// Add registers a check. Add it before the part it checks starts serving.
func (c *Checker) Add(name string, check Check) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names = append(c.names, name)
	c.checks = append(c.checks, check)
}

// Started marks start-up complete; until then the process is not ready.
func (c *Checker) Started() { c.started.Store(true) }

// Drain marks the process as shutting down: it is not ready from now on.
func (c *Checker) Drain() { c.draining.Store(true) }

// Draining reports whether Drain was called.
func (c *Checker) Draining() bool { return c.draining.Load() }

// Report is the readiness verdict with each check's answer.
type Report struct {
	Ready  bool              `json:"ready"`
	Reason string            `json:"reason,omitempty"`
	Checks map[string]string `json:"checks,omitempty"`
}

// Ready runs every check concurrently and reports.
func (c *Checker) Ready(ctx context.Context) Report {
	switch {
	case c.draining.Load():
		return Report{Reason: "shutting down"}
	case !c.started.Load():
		return Report{Reason: "starting"}
	}
	c.mu.Lock()
	names, checks := c.names, c.checks
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	results := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, check := range checks {
		wg.Go(func() { results[i] = check(ctx) })
	}
	wg.Wait()
	rep := Report{Ready: true, Checks: make(map[string]string, len(names))}
	for i, name := range names {
		if results[i] != nil {
			rep.Ready = false
			rep.Reason = name + " not answering"
			rep.Checks[name] = results[i].Error()
			continue
		}
		rep.Checks[name] = "ok"
	}
	return rep
}

// LiveHandler serves /healthz: 200 whenever the process can answer HTTP.
func (c *Checker) LiveHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
}

// ReadyHandler serves /readyz: 200 when ready, 503 otherwise, with the
// report as JSON.
func (c *Checker) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := c.Ready(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !rep.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
}
