package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rallyhq/rally/internal/store"
)

const (
	sessionTTL = time.Hour
	refreshTTL = 24 * time.Hour
)

// clock is an injectable time source tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	svc   *Service
	st    *store.Bolt
	reg   *prometheus.Registry
	clock *clock
	url   string // base URL of an httptest server with RegisterHTTP
}

func openStore(t testing.TB, path string) *store.Bolt {
	t.Helper()
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{st: openStore(t, filepath.Join(t.TempDir(), "rally.db")), reg: prometheus.NewRegistry(), clock: newClock()}
	key, err := ResolveKey(context.Background(), f.st, "")
	if err != nil {
		t.Fatal(err)
	}
	f.svc, err = New(f.st, Options{Key: key, SessionTTL: sessionTTL, RefreshTTL: refreshTTL, Now: f.clock.Now}, f.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	f.svc.RegisterHTTP(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

type response struct {
	status int
	body   map[string]any
}

func (r response) str(key string) string { s, _ := r.body[key].(string); return s }

func (f *fixture) post(t *testing.T, path, body string) response {
	t.Helper()
	resp, err := http.Post(f.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", path, ct)
	}
	out := response{status: resp.StatusCode}
	if err := json.NewDecoder(resp.Body).Decode(&out.body); err != nil {
		t.Fatalf("%s: decode response: %v", path, err)
	}
	return out
}

// metric returns the value of a counter in the registry, 0 when absent.
func (f *fixture) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func (f *fixture) count(t *testing.T, bucket string) int {
	t.Helper()
	n := 0
	if err := f.st.Scan(context.Background(), bucket, "", func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeviceCreateAndReauth(t *testing.T) {
	f := newFixture(t)
	first := f.post(t, "/v1/auth/device", `{"id":"device-0001","create":true}`)
	if first.status != http.StatusOK || first.body["created"] != true {
		t.Fatalf("create: %d %v", first.status, first.body)
	}
	uid, name := first.str("user_id"), first.str("username")
	if len(uid) != 26 || strings.ContainsAny(uid, ".*> ") || !strings.HasPrefix(name, "player-") {
		t.Fatalf("user_id %q username %q", uid, name)
	}
	exp, err := time.Parse(time.RFC3339, first.str("expires_at"))
	if err != nil || !exp.Equal(f.clock.Now().Add(sessionTTL)) {
		t.Fatalf("expires_at %q: %v", first.str("expires_at"), err)
	}

	again := f.post(t, "/v1/auth/device", `{"id":"device-0001"}`)
	if again.status != http.StatusOK || again.body["created"] != false || again.str("user_id") != uid || again.str("username") != name {
		t.Fatalf("re-auth: %d %v", again.status, again.body)
	}
	sess, err := f.svc.Verify(again.str("token"))
	if err != nil || sess.UserID != uid || sess.Username != name || sess.SessionID == "" || !sess.ExpiresAt.Equal(exp) {
		t.Fatalf("Verify = %+v, %v", sess, err)
	}
	if first, _ := f.svc.Verify(first.str("token")); first.SessionID == sess.SessionID {
		t.Fatal("two logins share a session id")
	}
	if got := f.metric(t, "rally_auth_accounts_created_total", nil); got != 1 {
		t.Errorf("accounts created = %v", got)
	}
	if got := f.metric(t, "rally_auth_requests_total", map[string]string{"endpoint": "device", "result": "created"}); got != 1 {
		t.Errorf("device/created = %v", got)
	}
	if got := f.metric(t, "rally_auth_requests_total", map[string]string{"endpoint": "device", "result": "ok"}); got != 1 {
		t.Errorf("device/ok = %v", got)
	}
}

func TestCustomCreateWithUsernameAndQueryCreate(t *testing.T) {
	f := newFixture(t)
	r := f.post(t, "/v1/auth/custom?create=true", `{"id":"steam:42","username":"Ace_1.x-y"}`)
	if r.status != http.StatusOK || r.body["created"] != true || r.str("username") != "Ace_1.x-y" {
		t.Fatalf("create: %d %v", r.status, r.body)
	}
	again := f.post(t, "/v1/auth/custom", `{"id":"steam:42","username":"ignored"}`)
	if again.status != http.StatusOK || again.str("user_id") != r.str("user_id") || again.str("username") != "Ace_1.x-y" {
		t.Fatalf("re-auth: %d %v", again.status, again.body)
	}
	// Device and custom ids live apart: the same string is another account.
	dev := f.post(t, "/v1/auth/device", `{"id":"steam:42-device","create":true}`)
	if dev.status != http.StatusOK || dev.str("user_id") == r.str("user_id") {
		t.Fatalf("device: %d %v", dev.status, dev.body)
	}
}

func TestMissingAccountNotFound(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ path, body string }{
		{"/v1/auth/device", `{"id":"device-0001"}`},
		{"/v1/auth/device?create=false", `{"id":"device-0001","create":false}`},
		{"/v1/auth/custom", `{"id":"custom-1"}`},
	} {
		r := f.post(t, c.path, c.body)
		if r.status != http.StatusNotFound || !strings.Contains(r.str("error"), "create=true") {
			t.Errorf("%s %s: %d %v", c.path, c.body, r.status, r.body)
		}
	}
	if n := f.count(t, accountsBucket); n != 0 {
		t.Fatalf("%d accounts after lookups", n)
	}
}

func TestUsernameConflict(t *testing.T) {
	f := newFixture(t)
	if r := f.post(t, "/v1/auth/device", `{"id":"device-0001","username":"alice","create":true}`); r.status != http.StatusOK {
		t.Fatalf("first: %d %v", r.status, r.body)
	}
	for _, name := range []string{"alice", "ALICE"} {
		r := f.post(t, "/v1/auth/device", fmt.Sprintf(`{"id":"device-0002","username":%q,"create":true}`, name))
		if r.status != http.StatusConflict || !strings.Contains(r.str("error"), "taken") {
			t.Errorf("%s: %d %v", name, r.status, r.body)
		}
	}
	// The failed create left nothing behind: device-0002 is still free.
	if r := f.post(t, "/v1/auth/device", `{"id":"device-0002","create":true}`); r.status != http.StatusOK {
		t.Fatalf("after conflict: %d %v", r.status, r.body)
	}
	if n := f.count(t, accountsBucket); n != 2 {
		t.Fatalf("%d accounts, want 2", n)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ name, path, body, want string }{
		{"short device id", "/v1/auth/device", `{"id":"123456789","create":true}`, "device id must be 10-128 characters, got 9"},
		{"long device id", "/v1/auth/device", `{"id":"` + strings.Repeat("d", 129) + `","create":true}`, "10-128"},
		{"control char", "/v1/auth/device", `{"id":"device\u0000-0001","create":true}`, "control"},
		{"short custom id", "/v1/auth/custom", `{"id":"12345","create":true}`, "custom id must be 6-128 characters"},
		{"missing id", "/v1/auth/custom", `{"create":true}`, "custom id must be"},
		{"username chars", "/v1/auth/device", `{"id":"device-0001","username":"a b","create":true}`, "username may contain only"},
		{"username unicode", "/v1/auth/device", `{"id":"device-0001","username":"zoë","create":true}`, "username may contain only"},
		{"long username", "/v1/auth/device", `{"id":"device-0001","username":"` + strings.Repeat("u", 65) + `","create":true}`, "username must be 1-64 characters, got 65"},
		{"malformed", "/v1/auth/device", `{"id":`, "malformed JSON"},
		{"not json", "/v1/auth/device", `id=device-0001`, "malformed JSON"},
		{"empty body", "/v1/auth/device", ``, "must be a JSON object"},
		{"wrong type", "/v1/auth/device", `{"id":"device-0001","create":"yes"}`, `field "create" must be a boolean`},
		{"two objects", "/v1/auth/device", `{"id":"device-0001"}{}`, "single JSON object"},
		{"bad query", "/v1/auth/device?create=maybe", `{"id":"device-0001"}`, "create must be true or false"},
		{"no refresh token", "/v1/auth/refresh", `{}`, "refresh_token is required"},
	} {
		r := f.post(t, c.path, c.body)
		if r.status != http.StatusBadRequest || !strings.Contains(r.str("error"), c.want) {
			t.Errorf("%s: %d %q, want 400 containing %q", c.name, r.status, r.str("error"), c.want)
		}
	}
	big := `{"id":"device-0001","username":"` + strings.Repeat("x", 70<<10) + `"}`
	if r := f.post(t, "/v1/auth/device", big); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d %v", r.status, r.body)
	}
	if n := f.count(t, accountsBucket); n != 0 {
		t.Fatalf("%d accounts after bad input", n)
	}
}

func TestRefreshAndExpiry(t *testing.T) {
	f := newFixture(t)
	login := f.post(t, "/v1/auth/device", `{"id":"device-0001","create":true}`)
	first, err := f.svc.Verify(login.str("token"))
	if err != nil {
		t.Fatal(err)
	}

	f.clock.Advance(sessionTTL + time.Second)
	if _, err := f.svc.Verify(login.str("token")); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("Verify after session TTL: %v", err)
	}
	if got := f.metric(t, "rally_auth_token_rejections_total", map[string]string{"reason": "expired"}); got != 1 {
		t.Errorf("expired rejections = %v", got)
	}

	r := f.post(t, "/v1/auth/refresh", fmt.Sprintf(`{"refresh_token":%q}`, login.str("refresh_token")))
	if r.status != http.StatusOK || r.str("user_id") != login.str("user_id") || r.body["created"] != false {
		t.Fatalf("refresh: %d %v", r.status, r.body)
	}
	sess, err := f.svc.Verify(r.str("token"))
	if err != nil || sess.UserID != first.UserID || sess.SessionID != first.SessionID || sess.Username != first.Username {
		t.Fatalf("refreshed session %+v (%v), want the session of %+v", sess, err, first)
	}
	if exp, _ := time.Parse(time.RFC3339, r.str("expires_at")); !exp.Equal(f.clock.Now().Add(sessionTTL)) {
		t.Errorf("expires_at %s", r.str("expires_at"))
	}

	// The rotated refresh token works; past its TTL the old one does not.
	f.clock.Advance(refreshTTL - sessionTTL)
	if r := f.post(t, "/v1/auth/refresh", fmt.Sprintf(`{"refresh_token":%q}`, r.str("refresh_token"))); r.status != http.StatusOK {
		t.Fatalf("rotated refresh: %d %v", r.status, r.body)
	}
	expired := f.post(t, "/v1/auth/refresh", fmt.Sprintf(`{"refresh_token":%q}`, login.str("refresh_token")))
	if expired.status != http.StatusUnauthorized || expired.str("error") != "refresh token expired" {
		t.Fatalf("expired refresh: %d %v", expired.status, expired.body)
	}
	if got := f.metric(t, "rally_auth_requests_total", map[string]string{"endpoint": "refresh", "result": "unauthorized"}); got != 1 {
		t.Errorf("refresh/unauthorized = %v", got)
	}
}

func TestRefreshNeedsAccount(t *testing.T) {
	f := newFixture(t)
	login := f.post(t, "/v1/auth/device", `{"id":"device-0001","create":true}`)
	if err := f.st.Delete(context.Background(), accountsBucket, login.str("user_id")); err != nil {
		t.Fatal(err)
	}
	r := f.post(t, "/v1/auth/refresh", fmt.Sprintf(`{"refresh_token":%q}`, login.str("refresh_token")))
	if r.status != http.StatusUnauthorized || !strings.Contains(r.str("error"), "no longer exists") {
		t.Fatalf("refresh for a deleted account: %d %v", r.status, r.body)
	}
}

func TestForgedTokensRejected(t *testing.T) {
	f := newFixture(t)
	g, err := f.svc.AuthenticateDevice(context.Background(), "device-0001", "", true)
	if err != nil {
		t.Fatal(err)
	}
	// Re-sign the genuine payload in ways an attacker could.
	var c claims
	if _, _, err := jwt.NewParser().ParseUnverified(g.Token, &c); err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, c).SignedString(f.svc.key)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte("another-key-another-key-another-k"))
	if err != nil {
		t.Fatal(err)
	}
	noExp := c
	noExp.ExpiresAt = nil
	unexpiring, err := jwt.NewWithClaims(jwt.SigningMethodHS256, noExp).SignedString(f.svc.key)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(g.Token, ".")
	sig := []byte(parts[2])
	sig[len(sig)/2] ^= 1
	tampered := parts[0] + "." + parts[1] + "." + string(sig)
	payload := strings.Replace(parts[1], parts[1][4:8], "AAAA", 1)
	alteredClaims := parts[0] + "." + payload + "." + parts[2]

	for name, tok := range map[string]string{
		"tampered signature": tampered,
		"altered claims":     alteredClaims,
		"alg none":           none,
		"alg none no sig":    strings.TrimSuffix(none, "."),
		"HS512":              hs512,
		"other key":          otherKey,
		"no exp":             unexpiring,
		"garbage":            "not.a.token",
		"empty":              "",
	} {
		if _, err := f.svc.Verify(tok); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: Verify = %v, want ErrTokenInvalid", name, err)
		}
	}
	if got := f.metric(t, "rally_auth_token_rejections_total", map[string]string{"reason": "invalid"}); got != 9 {
		t.Errorf("invalid rejections = %v, want 9", got)
	}
	if _, err := f.svc.Verify(g.Token); err != nil {
		t.Fatalf("genuine token: %v", err)
	}
}

func TestTokenTypesDoNotMix(t *testing.T) {
	f := newFixture(t)
	g, err := f.svc.AuthenticateDevice(context.Background(), "device-0001", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Verify(g.RefreshToken); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("refresh token as session: %v", err)
	}
	if got := f.metric(t, "rally_auth_token_rejections_total", map[string]string{"reason": "wrong_type"}); got != 1 {
		t.Errorf("wrong_type rejections = %v", got)
	}
	r := f.post(t, "/v1/auth/refresh", fmt.Sprintf(`{"refresh_token":%q}`, g.Token))
	if r.status != http.StatusUnauthorized || r.str("error") != "not a refresh token" {
		t.Fatalf("session token as refresh: %d %v", r.status, r.body)
	}
}

func TestConcurrentCreatesMakeOneAccount(t *testing.T) {
	for name, username := range map[string]string{"generated username": "", "chosen username": "racer"} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			const n = 16
			var wg sync.WaitGroup
			grants := make([]Grant, n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					grants[i], errs[i] = f.svc.AuthenticateDevice(context.Background(), "device-race-1", username, true)
				})
			}
			wg.Wait()
			created := 0
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("create %d: %v", i, errs[i])
				}
				if grants[i].UserID != grants[0].UserID {
					t.Fatalf("user ids differ: %s, %s", grants[i].UserID, grants[0].UserID)
				}
				if grants[i].Created {
					created++
				}
			}
			if created != 1 {
				t.Errorf("%d calls report created, want 1", created)
			}
			for _, b := range []string{accountsBucket, usernamesBucket, devicesBucket} {
				if c := f.count(t, b); c != 1 {
					t.Errorf("bucket %s holds %d entries, want 1", b, c)
				}
			}
		})
	}
}

// TestRaceLoserDiscards drives the cross-process path the in-process lock
// hides: the id mapping appears between lookup and commit.
func TestRaceLoserDiscards(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	winner, err := f.svc.AuthenticateDevice(ctx, "device-other-node", "", true)
	if err != nil {
		t.Fatal(err)
	}
	racer := &racingStore{Store: f.st, bucket: devicesBucket, key: "device-race-2", uid: winner.UserID}
	svc, err := New(racer, Options{Key: f.svc.key, SessionTTL: sessionTTL, RefreshTTL: refreshTTL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := svc.AuthenticateDevice(ctx, "device-race-2", "loser", true)
	if err != nil || g.Created || g.UserID != winner.UserID {
		t.Fatalf("loser got %+v, %v; want the winner %s", g, err, winner.UserID)
	}
	if c := f.count(t, accountsBucket); c != 1 {
		t.Errorf("%d accounts, want the winner's only", c)
	}
	if _, err := f.st.Get(ctx, usernamesBucket, "loser"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("loser's username still reserved: %v", err)
	}
}

// racingStore maps key to uid just before the first PutIfAbsent on it, as
// another process sharing the store would.
type racingStore struct {
	store.Store
	bucket, key, uid string
	once             sync.Once
}

func (r *racingStore) PutIfAbsent(ctx context.Context, bucket, key string, value []byte) ([]byte, bool, error) {
	if bucket == r.bucket && key == r.key {
		r.once.Do(func() { _ = r.Store.Put(ctx, bucket, key, []byte(r.uid)) })
	}
	return r.Store.PutIfAbsent(ctx, bucket, key, value)
}

// brokenStore fails every read, as a store that lost its disk would.
type brokenStore struct{ store.Store }

func (brokenStore) Get(context.Context, string, string) ([]byte, error) {
	return nil, errors.New("disk on fire")
}

func TestStoreFailureIsInternalError(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	svc, err := New(brokenStore{f.st}, Options{Key: []byte("k"), SessionTTL: sessionTTL, RefreshTTL: refreshTTL}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	svc.RegisterHTTP(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	f.url, f.reg = srv.URL, reg
	r := f.post(t, "/v1/auth/device", `{"id":"device-0001","create":true}`)
	if r.status != http.StatusInternalServerError || r.str("error") != "internal error" {
		t.Fatalf("store failure: %d %v", r.status, r.body)
	}
	if got := f.metric(t, "rally_auth_requests_total", map[string]string{"endpoint": "device", "result": "error"}); got != 1 {
		t.Errorf("device/error = %v", got)
	}
}

func TestKeyPersistsAcrossRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rally.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	k1, err := ResolveKey(ctx, st, "")
	if err != nil || len(k1) != 32 {
		t.Fatalf("ResolveKey = %d bytes, %v", len(k1), err)
	}
	if k2, err := ResolveKey(ctx, st, ""); err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second ResolveKey differs (%v)", err)
	}
	if k, _ := ResolveKey(ctx, st, "configured-key"); string(k) != "configured-key" {
		t.Fatalf("configured key ignored: %q", k)
	}
	svc, err := New(st, Options{Key: k1, SessionTTL: sessionTTL, RefreshTTL: refreshTTL}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := svc.AuthenticateDevice(ctx, "device-0001", "keeper", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, path)
	k3, err := ResolveKey(ctx, st, "")
	if err != nil || !bytes.Equal(k1, k3) {
		t.Fatalf("key changed across reopen (%v)", err)
	}
	svc, err = New(st, Options{Key: k3, SessionTTL: sessionTTL, RefreshTTL: refreshTTL}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sess, err := svc.Verify(g.Token); err != nil || sess.UserID != g.UserID || sess.Username != "keeper" {
		t.Fatalf("token from before the restart: %+v, %v", sess, err)
	}
	if r, err := svc.Refresh(ctx, g.RefreshToken); err != nil || r.UserID != g.UserID {
		t.Fatalf("refresh after restart: %+v, %v", r, err)
	}
	if again, err := svc.AuthenticateDevice(ctx, "device-0001", "", false); err != nil || again.UserID != g.UserID {
		t.Fatalf("account after restart: %+v, %v", again, err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "rally.db"))
	for name, o := range map[string]Options{
		"no key":            {SessionTTL: time.Hour, RefreshTTL: time.Hour},
		"no session ttl":    {Key: []byte("k"), RefreshTTL: time.Hour},
		"refresh < session": {Key: []byte("k"), SessionTTL: time.Hour, RefreshTTL: time.Minute},
	} {
		if _, err := New(st, o, nil, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	reg := prometheus.NewRegistry()
	ok := Options{Key: []byte("k"), SessionTTL: time.Hour, RefreshTTL: time.Hour}
	if _, err := New(st, ok, reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := New(st, ok, reg, nil); err == nil {
		t.Error("registering metrics twice succeeded")
	}
}

func TestBearerFromRequest(t *testing.T) {
	for _, c := range []struct{ header, target, want string }{
		{"Bearer abc.def.ghi", "/ws", "abc.def.ghi"},
		{"bearer   abc", "/ws?token=q", "abc"},
		{"Basic dXNlcjpwYXNz", "/ws?token=q", "q"},
		{"", "/ws?token=q", "q"},
		{"Bearer ", "/ws", ""},
		{"", "/ws", ""},
	} {
		r := httptest.NewRequest(http.MethodGet, c.target, nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		if got := BearerFromRequest(r); got != c.want {
			t.Errorf("%q %s: %q, want %q", c.header, c.target, got, c.want)
		}
	}
}

func TestContextRoundTrip(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("session in an empty context")
	}
	want := Session{UserID: "u", Username: "n", SessionID: "s"}
	if got, ok := FromContext(NewContext(context.Background(), want)); !ok || got != want {
		t.Fatalf("FromContext = %+v, %v", got, ok)
	}
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	g, err := f.svc.AuthenticateDevice(context.Background(), "device-bench-1", "", true)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.svc.Verify(g.Token); err != nil {
			b.Fatal(err)
		}
	}
}
