package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func status(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	return rec.Code, rec.Body.String()
}

func TestReadinessLifecycle(t *testing.T) {
	c := NewChecker(time.Second)
	var storeErr error
	c.Add("store", func(context.Context) error { return storeErr })
	c.Add("nats", func(context.Context) error { return nil })
	h := c.ReadyHandler()

	if code, body := status(t, h); code != 503 || !strings.Contains(body, "starting") {
		t.Fatalf("before start: %d %s", code, body)
	}
	c.Started()
	if code, body := status(t, h); code != 200 || !strings.Contains(body, `"store":"ok"`) {
		t.Fatalf("started: %d %s", code, body)
	}
	storeErr = errors.New("disk gone")
	if code, body := status(t, h); code != 503 || !strings.Contains(body, "disk gone") || !strings.Contains(body, "store not answering") {
		t.Fatalf("failing check: %d %s", code, body)
	}
	storeErr = nil
	c.Drain()
	if code, body := status(t, h); code != 503 || !strings.Contains(body, "shutting down") {
		t.Fatalf("draining: %d %s", code, body)
	}
	rec := httptest.NewRecorder()
	c.LiveHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Fatalf("liveness while draining: %d", rec.Code)
	}
}

// A check that hangs is cut off by the timeout instead of hanging the probe.
func TestHangingCheckTimesOut(t *testing.T) {
	c := NewChecker(50 * time.Millisecond)
	c.Add("slow", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	c.Started()
	rep := c.Ready(context.Background())
	if rep.Ready || !strings.Contains(rep.Checks["slow"], "deadline") {
		t.Fatalf("%+v", rep)
	}
}
