package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	matchv1 "github.com/rallyhq/rally/api/proto/rally/match/v1"
	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// adminBase is where a server answers /admin/ requests.
func adminBase(s *Server) string { return "http://" + s.Addrs().HTTP }

// send sends a JSON body (or none) with an optional bearer token and
// returns the status and body.
func send(t *testing.T, method, url, token string, body any) (int, string) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, rd)
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
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

// refresh trades a refresh token over HTTP.
func refresh(t *testing.T, s *Server, token string) (int, map[string]any) {
	t.Helper()
	code, body := send(t, "POST", "http://"+s.Addrs().HTTP+"/v1/auth/refresh", "", map[string]string{"refresh_token": token})
	var out map[string]any
	_ = json.Unmarshal([]byte(body), &out)
	return code, out
}

// grpcRefused reports whether a session token is refused by the gRPC API.
func grpcRefused(ctx context.Context, t *testing.T, s *Server, token string) bool {
	t.Helper()
	_, err := matchClient(t, s).CreateTicket(bearer(ctx, token), &matchv1.TicketRequest{Queue: "squad"})
	return status.Code(err) == codes.Unauthenticated
}

// waitEnded waits for the SDK client to be closed by the server with
// UNAUTHENTICATED and returns how long that took.
func waitEnded(t *testing.T, c *rally.Client, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-c.Done():
	case <-time.After(within):
		t.Fatalf("socket still open %v after its session ended (last error %v)", within, c.LastError())
	}
	if got := c.LastError().GetCode(); got != rtv1.Error_CODE_UNAUTHENTICATED {
		t.Fatalf("closing error %v, want UNAUTHENTICATED", c.LastError())
	}
	return time.Since(start)
}

// Logout ends a session at once: its socket closes, its session and
// refresh tokens are refused over HTTP, gRPC and the socket, and that
// survives a restart. Other sessions of the same player live on.
func TestLogoutEndsTheSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig(t)
	s := startServer(t, cfg)
	base := "http://" + s.Addrs().HTTP
	sess, err := rally.AuthenticateDevice(ctx, base, "device-logout-0123456789", "leaver", true)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rally.AuthenticateDevice(ctx, base, "device-logout-0123456789", "", false)
	if err != nil || other.UserID != sess.UserID {
		t.Fatal(err)
	}
	c, err := rally.Dial(ctx, sess, rally.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if code, body := send(t, "POST", base+"/v1/auth/logout", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("logout without a token: %d %s", code, body)
	}
	if code, body := send(t, "POST", base+"/v1/auth/logout", sess.Token, nil); code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", code, body)
	}
	took := waitEnded(t, c, 5*time.Second)
	t.Logf("socket closed %v after logout", took)
	check := func(s *Server) {
		t.Helper()
		if !grpcRefused(ctx, t, s, sess.Token) {
			t.Fatal("gRPC accepted a logged-out session token")
		}
		if code, _ := refresh(t, s, sess.RefreshToken); code != http.StatusUnauthorized {
			t.Fatalf("refresh after logout: %d", code)
		}
		if _, err := rally.Dial(ctx, &rally.Session{BaseURL: "http://" + s.Addrs().HTTP, Token: sess.Token, UserID: sess.UserID, ExpiresAt: sess.ExpiresAt}, rally.Options{DisableReconnect: true}); err == nil {
			t.Fatal("socket accepted a logged-out session token")
		}
		if grpcRefused(ctx, t, s, other.Token) {
			t.Fatal("logout ended another session of the player")
		}
	}
	check(s)
	if got := metricValue(t, s, "rally_auth_revocations_total", "kind", "logout"); got != 1 {
		t.Fatalf("logouts counted: %v", got)
	}

	// Durable: a restart on the same data still refuses it.
	shutdown(t, s)
	s = startServer(t, cfg)
	defer shutdown(t, s)
	check(s)
}

// Each refresh token works once. Using one again ends the whole session:
// the thief's copy and the player's newer tokens stop working alike.
func TestRefreshReuseEndsTheFamily(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := startServer(t, testConfig(t))
	defer shutdown(t, s)
	sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-rotate-0123456789", "rotator", true)
	if err != nil {
		t.Fatal(err)
	}
	code, g2 := refresh(t, s, sess.RefreshToken)
	if code != http.StatusOK || g2["refresh_token"] == sess.RefreshToken {
		t.Fatalf("first refresh: %d %v", code, g2)
	}
	code, g3 := refresh(t, s, g2["refresh_token"].(string))
	if code != http.StatusOK {
		t.Fatalf("second refresh: %d %v", code, g3)
	}
	if grpcRefused(ctx, t, s, g3["token"].(string)) {
		t.Fatal("a fresh session token refused")
	}
	// The stolen (older) refresh token comes back.
	code, out := refresh(t, s, g2["refresh_token"].(string))
	if code != http.StatusUnauthorized || !strings.Contains(out["error"].(string), "already used") {
		t.Fatalf("a reused refresh token: %d %v", code, out)
	}
	if code, _ := refresh(t, s, g3["refresh_token"].(string)); code != http.StatusUnauthorized {
		t.Fatalf("the family's newest refresh token after reuse: %d", code)
	}
	for _, tok := range []string{sess.Token, g2["token"].(string), g3["token"].(string)} {
		if !grpcRefused(ctx, t, s, tok) {
			t.Fatal("a session token of the ended family accepted")
		}
	}
	if got := metricValue(t, s, "rally_auth_token_rejections_total", "reason", "reused"); got != 1 {
		t.Fatalf("reuses counted: %v", got)
	}
}

// An operator's ban on one node closes the player's socket on another
// within a second, and refuses the player's tokens and new sign-ins on
// both; lifting it lets the player back.
func TestBanDisconnectsAndRefusesAcrossNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key := "a signing key both nodes share, 32+ bytes"
	cfgA := testConfig(t)
	cfgA.NATS.Addr, cfgA.Auth.SigningKey = "127.0.0.1:0", key
	a := startServer(t, cfgA)
	defer shutdown(t, a)
	cfgB := testConfig(t)
	cfgB.NATS.URL, cfgB.Auth.SigningKey = "nats://"+a.Addrs().NATS, key
	b := startServer(t, cfgB)
	defer shutdown(t, b)

	baseB := "http://" + b.Addrs().HTTP
	sess, err := rally.AuthenticateDevice(ctx, baseB, "device-banned-0123456789", "cheater", true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rally.Dial(ctx, sess, rally.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bystander := player(t, b, "bystander", rally.Options{})

	banURL := adminBase(a) + "/admin/players/" + sess.UserID + "/ban"
	if code, body := send(t, "PUT", banURL, "", map[string]string{"duration": "soon"}); code != http.StatusBadRequest {
		t.Fatalf("a ban with a bad duration: %d %s", code, body)
	}
	if code, body := send(t, "GET", banURL, "", nil); code != http.StatusNotFound {
		t.Fatalf("ban before banning: %d %s", code, body)
	}
	start := time.Now()
	code, body := send(t, "PUT", banURL, "", map[string]string{"reason": "aimbot"})
	if code != http.StatusOK || !strings.Contains(body, "aimbot") {
		t.Fatalf("ban: %d %s", code, body)
	}
	waitEnded(t, c, 5*time.Second)
	took := time.Since(start)
	t.Logf("socket on the other node closed %v after the ban request was sent", took)
	if took > time.Second {
		t.Fatalf("ban took %v to disconnect, want under 1s", took)
	}
	if !strings.Contains(c.LastError().GetMessage(), "aimbot") {
		t.Fatalf("the player was not told why: %v", c.LastError())
	}
	for _, s := range []*Server{a, b} {
		if !grpcRefused(ctx, t, s, sess.Token) {
			t.Fatal("a banned player's session token accepted")
		}
	}
	if code, _ := refresh(t, b, sess.RefreshToken); code != http.StatusForbidden {
		t.Fatalf("a banned player's refresh: %d", code)
	}
	if _, err := rally.AuthenticateDevice(ctx, baseB, "device-banned-0123456789", "", false); err == nil || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("a banned player signed in: %v", err)
	}
	if _, err := bystander.Ping(ctx); err != nil {
		t.Fatalf("the ban touched another player: %v", err)
	}

	// Lifted on B, in force nowhere.
	if code, body := send(t, "DELETE", adminBase(b)+"/admin/players/"+sess.UserID+"/ban", "", nil); code != http.StatusNoContent {
		t.Fatalf("unban: %d %s", code, body)
	}
	eventually(t, 5*time.Second, "unban reaches node A", func() (bool, string) {
		code, body := send(t, "GET", banURL, "", nil)
		return code == http.StatusNotFound, body
	})
	again, err := rally.AuthenticateDevice(ctx, baseB, "device-banned-0123456789", "", false)
	if err != nil || again.UserID != sess.UserID {
		t.Fatalf("sign-in after the unban: %v", err)
	}
	if grpcRefused(ctx, t, a, again.Token) {
		t.Fatal("a new session after the unban refused")
	}
}
