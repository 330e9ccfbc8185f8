package server

import (
	"io"
	"net/http"
	"testing"
)

// With http.admin_token set, /admin/ endpoints want it as a bearer token;
// the refusals are counted.
func TestAdminEndpointsNeedTheToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTP.AdminToken = "s3cret-admin"
	s := startServer(t, cfg)
	defer shutdown(t, s)
	url := "http://" + s.Addrs().HTTP + "/admin/liveconfig"
	status := func(token string) int {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(""); got != http.StatusUnauthorized {
		t.Fatalf("no token: %d", got)
	}
	if got := status("guess"); got != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", got)
	}
	if got := status("s3cret-admin"); got != http.StatusOK {
		t.Fatalf("right token: %d", got)
	}
	if n := gauge(t, s, "rally_http_admin_rejections_total"); n != 2 {
		t.Fatalf("rejections counted: %v, want 2", n)
	}
}
