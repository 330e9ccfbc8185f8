// Package launch runs a rally binary as a child process and follows its JSON
// log to learn its listen addresses and when it is ready. End-to-end tests
// and start-up benchmarks use it, so they exercise the real binary.
package launch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a running rally binary.
type Process struct {
	cmd     *exec.Cmd
	started time.Time

	mu     sync.Mutex
	lines  []string
	seen   map[string]map[string]any // first record of each log message
	notify chan struct{}             // closed and replaced on every new line

	exited  chan struct{}
	exitErr error
}

// MaxLogLines bounds the log kept for diagnostics.
const MaxLogLines = 2000

// Start runs binary with args (for `serve`, include --log-format json) and
// the given extra environment. The child is killed if ctx ends.
func Start(ctx context.Context, binary string, args []string, env []string) (*Process, error) {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &Process{
		cmd:    cmd,
		seen:   map[string]map[string]any{},
		notify: make(chan struct{}),
		exited: make(chan struct{}),
	}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go p.follow(stderr)
	return p, nil
}

func (p *Process) follow(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec map[string]any
		_ = json.Unmarshal([]byte(line), &rec)
		p.mu.Lock()
		if len(p.lines) == MaxLogLines {
			p.lines = p.lines[1:]
		}
		p.lines = append(p.lines, line)
		if msg, ok := rec["msg"].(string); ok {
			if _, dup := p.seen[msg]; !dup {
				p.seen[msg] = rec
			}
		}
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}
	p.exitErr = p.cmd.Wait()
	close(p.exited)
	p.mu.Lock()
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
}

// Started is when the process was executed.
func (p *Process) Started() time.Time { return p.started }

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// WaitLog waits until a log record with message msg appears and returns its
// fields. It fails if the process exits or ctx ends first.
func (p *Process) WaitLog(ctx context.Context, msg string) (map[string]any, error) {
	for {
		p.mu.Lock()
		rec, ok := p.seen[msg]
		ch := p.notify
		p.mu.Unlock()
		if ok {
			return rec, nil
		}
		select {
		case <-ch:
		case <-p.exited:
			// Lines written just before exit may still be pending.
			p.mu.Lock()
			rec, ok = p.seen[msg]
			p.mu.Unlock()
			if ok {
				return rec, nil
			}
			return nil, fmt.Errorf("rally exited (%v) before logging %q; log:\n%s", p.exitErr, msg, p.Log())
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for log %q: %w; log:\n%s", msg, ctx.Err(), p.Log())
		}
	}
}

// Addrs are the listen addresses a server logged.
type Addrs struct {
	HTTP, GRPC, NATS string
	NodeID           string
}

// WaitListening waits for the listeners to be bound and returns their
// addresses (NATS is known only once ready).
func (p *Process) WaitListening(ctx context.Context) (Addrs, error) {
	rec, err := p.WaitLog(ctx, "listening")
	if err != nil {
		return Addrs{}, err
	}
	return Addrs{HTTP: str(rec["http"]), GRPC: str(rec["grpc"])}, nil
}

// WaitReady waits for the server's ready record and returns its addresses.
func (p *Process) WaitReady(ctx context.Context) (Addrs, error) {
	rec, err := p.WaitLog(ctx, "rally ready")
	if err != nil {
		return Addrs{}, err
	}
	return Addrs{HTTP: str(rec["http"]), GRPC: str(rec["grpc"]), NATS: str(rec["nats"]), NodeID: str(rec["node_id"])}, nil
}

func str(v any) string { s, _ := v.(string); return s }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill ends the process with SIGKILL and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits for exit and returns the exit code (-1 if killed by a signal).
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.exited:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	var ee *exec.ExitError
	if p.exitErr == nil {
		return 0, nil
	}
	if errors.As(p.exitErr, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, p.exitErr
}

// Stop sends SIGTERM and waits for exit, killing the process if ctx ends.
func (p *Process) Stop(ctx context.Context) (int, error) {
	_ = p.Signal(syscall.SIGTERM)
	code, err := p.Wait(ctx)
	if err != nil {
		p.Kill()
	}
	return code, err
}

// Log returns the log lines kept so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}
