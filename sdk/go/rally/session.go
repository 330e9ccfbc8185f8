// Package rally is the Go client SDK for Rally: it authenticates a player,
// keeps a realtime connection open (reconnecting with backoff when it
// drops), joins and leaves rooms, sends input, and keeps a local view of
// each authoritative room's entity state, updated from the server's
// snapshots and deltas.
package rally

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Session is an authenticated player.
type Session struct {
	BaseURL      string // http://host:7350
	Token        string
	RefreshToken string
	UserID       string
	Username     string
	ExpiresAt    time.Time
	Created      bool

	mu sync.Mutex
}

type authResponse struct {
	Token        string `json:"token"`
	RefreshToken string `json:"refresh_token"`
	UserID       string `json:"user_id"`
	Username     string `json:"username"`
	Created      bool   `json:"created"`
	ExpiresAt    string `json:"expires_at"`
	Error        string `json:"error"`
}

// AuthenticateDevice logs in with a device id, creating the account when
// create is true.
func AuthenticateDevice(ctx context.Context, baseURL, deviceID, username string, create bool) (*Session, error) {
	return authenticate(ctx, baseURL, "device", deviceID, username, create)
}

// AuthenticateCustom logs in with an id from the game's own account system.
func AuthenticateCustom(ctx context.Context, baseURL, customID, username string, create bool) (*Session, error) {
	return authenticate(ctx, baseURL, "custom", customID, username, create)
}

func authenticate(ctx context.Context, baseURL, kind, id, username string, create bool) (*Session, error) {
	body, _ := json.Marshal(map[string]any{"id": id, "username": username, "create": create})
	var resp authResponse
	if err := post(ctx, strings.TrimRight(baseURL, "/")+"/v1/auth/"+kind, body, &resp); err != nil {
		return nil, err
	}
	s := &Session{BaseURL: strings.TrimRight(baseURL, "/")}
	s.apply(resp)
	return s, nil
}

func (s *Session) apply(r authResponse) {
	s.Token, s.RefreshToken, s.UserID, s.Username, s.Created = r.Token, r.RefreshToken, r.UserID, r.Username, r.Created
	s.ExpiresAt, _ = time.Parse(time.RFC3339, r.ExpiresAt)
}

// Refresh exchanges the refresh token for a new session token.
func (s *Session) Refresh(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	body, _ := json.Marshal(map[string]string{"refresh_token": s.RefreshToken})
	var resp authResponse
	if err := post(ctx, s.BaseURL+"/v1/auth/refresh", body, &resp); err != nil {
		return err
	}
	s.apply(resp)
	return nil
}

// token returns a session token valid for at least a little longer,
// refreshing it first when it is about to expire.
func (s *Session) token(ctx context.Context) (string, error) {
	s.mu.Lock()
	expiring := !s.ExpiresAt.IsZero() && time.Until(s.ExpiresAt) < 30*time.Second
	tok := s.Token
	s.mu.Unlock()
	if expiring {
		if err := s.Refresh(ctx); err != nil {
			return "", err
		}
		s.mu.Lock()
		tok = s.Token
		s.mu.Unlock()
	}
	return tok, nil
}

// HTTPError is a non-2xx answer from the server.
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("rally: HTTP %d: %s", e.Status, e.Message) }

func post(ctx context.Context, url string, body []byte, out *authResponse) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	_ = json.Unmarshal(raw, out)
	if resp.StatusCode/100 != 2 {
		msg := out.Error
		if msg == "" {
			msg = strings.TrimSpace(string(raw))
		}
		return &HTTPError{Status: resp.StatusCode, Message: msg}
	}
	return nil
}
