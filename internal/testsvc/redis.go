// Package testsvc starts the real services tests talk to (redis-server
// from the system's packages), each throwaway, on a free loopback port, and
// gone when the test ends. It is for tests only.
package testsvc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server that one test (or benchmark) owns.
type Redis struct {
	Addr string
}

// lockedBuffer collects the server's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartRedis starts a throwaway redis-server on a free loopback port, with
// no persistence, and stops it when tb ends. Without redis-server the test
// fails, or skips when RALLY_TEST_SERVICES=optional.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		const msg = "redis-server is not installed: run scripts/test-deps.sh (or set RALLY_TEST_SERVICES=optional to skip tests that need it)"
		if os.Getenv("RALLY_TEST_SERVICES") == "optional" {
			tb.Skip(msg)
		}
		tb.Fatal(msg)
	}
	dir := tb.TempDir()
	var lastErr error
	// The free port is only reserved until it is closed, so another process
	// may take it before redis binds: try a few ports.
	for attempt := 0; attempt < 5; attempt++ {
		s, err := tryStartRedis(tb, bin, dir)
		if err == nil {
			return s
		}
		lastErr = err
	}
	tb.Fatalf("redis-server did not start: %v", lastErr)
	return nil
}

func tryStartRedis(tb testing.TB, bin, dir string) (*Redis, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	out := new(lockedBuffer)
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--daemonize", "no", "--logfile", "")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitRedis(addr, cmd.Process.Pid, exited); err != nil {
		stop()
		return nil, fmt.Errorf("%w\n%s", err, out.String())
	}
	tb.Cleanup(stop)
	return &Redis{Addr: addr}, nil
}

// waitRedis polls until the server on addr answers as process pid: a
// server of someone else's that took the port first must not be used.
func waitRedis(addr string, pid int, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	want := "process_id:" + strconv.Itoa(pid)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil {
			if strings.Contains(info, want+"\r\n") {
				return nil
			}
			err = fmt.Errorf("port %s answered by another server", addr)
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited", addr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready: %w", addr, err)
		}
	}
}

// URL returns the server's redis:// URL.
func (s *Redis) URL() string { return "redis://" + s.Addr + "/0" }
