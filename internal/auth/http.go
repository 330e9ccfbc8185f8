package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

const (
	endpointDevice  = "device"
	endpointCustom  = "custom"
	endpointRefresh = "refresh"
	endpointLogout  = "logout"

	resultOK           = "ok"
	resultCreated      = "created"
	resultBadRequest   = "bad_request"
	resultTooLarge     = "too_large"
	resultUnauthorized = "unauthorized"
	resultNotFound     = "not_found"
	resultForbidden    = "forbidden"
	resultConflict     = "conflict"
	resultError        = "error"

	maxBody = 64 << 10
)

// RegisterHTTP adds the login and refresh endpoints to mux.
func (s *Service) RegisterHTTP(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/auth/device", s.handleID(deviceID))
	mux.HandleFunc("POST /v1/auth/custom", s.handleID(customID))
	mux.HandleFunc("POST /v1/auth/refresh", s.handleRefresh)
	mux.HandleFunc("POST /v1/auth/logout", s.handleLogout)
}

// handleLogout ends the session of the bearer's session token (and with it
// its refresh token): 204, on every node.
func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	ctx, span := s.tracer.Start(r.Context(), "auth.logout")
	defer span.End()
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		s.writeError(w, span, endpointLogout, fail(ErrTokenInvalid, "send the session token as Authorization: Bearer <token>"))
		return
	}
	sess, err := s.Verify(tok)
	if err != nil {
		s.writeError(w, span, endpointLogout, err)
		return
	}
	span.SetAttributes(attribute.String("player.id", sess.UserID), attribute.String("session.id", sess.SessionID))
	if err := s.Logout(ctx, sess); err != nil {
		s.writeError(w, span, endpointLogout, err)
		return
	}
	s.requests.WithLabelValues(endpointLogout, resultOK).Inc()
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// AdminHandler serves the operator's player endpoints, for a mux behind
// the admin guard:
//
//	GET    /admin/players/{id}/ban   the ban in force (404 if none)
//	PUT    /admin/players/{id}/ban   ban: {"reason": "...", "duration": "72h"} (no duration: until lifted)
//	DELETE /admin/players/{id}/ban   lift it (404 if none)
func (s *Service) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/players/{id}/ban", func(w http.ResponseWriter, r *http.Request) {
		b, ok := s.BanOf(r.PathValue("id"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no ban in force"})
			return
		}
		writeJSON(w, http.StatusOK, banResponse(r.PathValue("id"), b))
	})
	mux.HandleFunc("PUT /admin/players/{id}/ban", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason   string `json:"reason"`
			Duration string `json:"duration"`
		}
		if err := decodeBody(w, r, &req); err != nil && !errors.Is(err, errEmptyBody) {
			_, _, msg := classify(err)
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
			return
		}
		var until time.Time
		if req.Duration != "" {
			d, err := time.ParseDuration(req.Duration)
			if err != nil || d <= 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": `duration: a positive duration such as "72h"`})
				return
			}
			until = s.now().Add(d)
		}
		b, err := s.Ban(r.Context(), r.PathValue("id"), req.Reason, until)
		if err != nil {
			status, _, msg := classify(err)
			writeJSON(w, status, map[string]string{"error": msg})
			return
		}
		writeJSON(w, http.StatusOK, banResponse(r.PathValue("id"), b))
	})
	mux.HandleFunc("DELETE /admin/players/{id}/ban", func(w http.ResponseWriter, r *http.Request) {
		ok, err := s.Unban(r.Context(), r.PathValue("id"))
		switch {
		case err != nil:
			status, _, msg := classify(err)
			writeJSON(w, status, map[string]string{"error": msg})
		case !ok:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no ban in force"})
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	return mux
}

func banResponse(uid string, b Ban) map[string]any {
	out := map[string]any{"user_id": uid, "reason": b.Reason, "at": b.At.Format(time.RFC3339Nano)}
	if !b.Until.IsZero() {
		out["until"] = b.Until.Format(time.RFC3339Nano)
	}
	return out
}

// BearerFromRequest returns the token of an "Authorization: Bearer" header,
// else the "token" query parameter (browsers cannot set headers on a
// WebSocket handshake), else "".
func BearerFromRequest(r *http.Request) string {
	if tok, ok := bearer(r.Header.Get("Authorization")); ok {
		return tok
	}
	return r.URL.Query().Get("token")
}

// bearer extracts the token from an Authorization value; the scheme is
// case-insensitive (RFC 7235).
func bearer(v string) (string, bool) {
	const prefix = "bearer "
	if len(v) < len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	tok := strings.TrimSpace(v[len(prefix):])
	return tok, tok != ""
}

type idRequest struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Create   bool   `json:"create"`
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

type grantResponse struct {
	Token        string `json:"token"`
	RefreshToken string `json:"refresh_token"`
	UserID       string `json:"user_id"`
	Username     string `json:"username"`
	Created      bool   `json:"created"`
	ExpiresAt    string `json:"expires_at"`
}

func (s *Service) handleID(kind idKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, span := s.tracer.Start(r.Context(), "auth."+kind.endpoint)
		defer span.End()
		var req idRequest
		if err := decodeBody(w, r, &req); err != nil {
			s.writeError(w, span, kind.endpoint, err)
			return
		}
		create := req.Create
		if q := r.URL.Query().Get("create"); q != "" {
			b, err := strconv.ParseBool(q)
			if err != nil {
				s.writeError(w, span, kind.endpoint, fail(ErrInvalidInput, fmt.Sprintf("query parameter create must be true or false, got %q", q)))
				return
			}
			create = create || b
		}
		g, err := s.authenticate(ctx, kind, req.ID, req.Username, create)
		if err != nil {
			s.writeError(w, span, kind.endpoint, err)
			return
		}
		span.SetAttributes(attribute.Bool("auth.created", g.Created))
		s.writeGrant(w, span, kind.endpoint, g)
	}
}

func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) {
	ctx, span := s.tracer.Start(r.Context(), "auth.refresh")
	defer span.End()
	var req refreshRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, span, endpointRefresh, err)
		return
	}
	if req.RefreshToken == "" {
		s.writeError(w, span, endpointRefresh, fail(ErrInvalidInput, "refresh_token is required"))
		return
	}
	g, err := s.Refresh(ctx, req.RefreshToken)
	if err != nil {
		s.writeError(w, span, endpointRefresh, err)
		return
	}
	s.writeGrant(w, span, endpointRefresh, g)
}

// errEmptyBody is decodeBody's answer to a request without a body.
var errEmptyBody = fail(ErrInvalidInput, "request body must be a JSON object")

// decodeBody reads one JSON object of at most maxBody bytes into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		return fail(ErrInvalidInput, "request body must hold a single JSON object")
	}
	var tooLarge *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return err
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return fail(ErrInvalidInput, fmt.Sprintf("field %q must be a %s", typeErr.Field, jsonType(typeErr.Type.Kind().String())))
	default:
		return fail(ErrInvalidInput, "malformed JSON: "+strings.TrimPrefix(err.Error(), "json: "))
	}
}

// jsonType names a Go kind the way a client writing JSON thinks of it.
func jsonType(kind string) string {
	if kind == "bool" {
		return "boolean"
	}
	return kind
}

func (s *Service) writeGrant(w http.ResponseWriter, span trace.Span, endpoint string, g Grant) {
	span.SetAttributes(attribute.String("player.id", g.UserID), attribute.String("session.id", g.SessionID))
	result := resultOK
	if g.Created {
		result = resultCreated
	}
	s.requests.WithLabelValues(endpoint, result).Inc()
	writeJSON(w, http.StatusOK, grantResponse{
		Token:        g.Token,
		RefreshToken: g.RefreshToken,
		UserID:       g.UserID,
		Username:     g.Username,
		Created:      g.Created,
		ExpiresAt:    g.ExpiresAt.Format(time.RFC3339),
	})
}

func (s *Service) writeError(w http.ResponseWriter, span trace.Span, endpoint string, err error) {
	status, result, msg := classify(err)
	s.requests.WithLabelValues(endpoint, result).Inc()
	span.SetAttributes(attribute.String("auth.result", result))
	if status >= 500 {
		// Client mistakes are not server faults; only these mark the span.
		span.RecordError(err)
		span.SetStatus(codes.Error, "internal error")
		s.log.Error("auth request failed", "endpoint", endpoint, "err", err)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

// classify maps an error to its HTTP status, metrics result and the message
// shown to the client; internal details stay in the log.
func classify(err error) (status int, result, msg string) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge, resultTooLarge, fmt.Sprintf("request body exceeds %d bytes", tooLarge.Limit)
	}
	var ce *clientError
	if !errors.As(err, &ce) {
		return http.StatusInternalServerError, resultError, "internal error"
	}
	switch {
	case errors.Is(ce.kind, ErrInvalidInput):
		return http.StatusBadRequest, resultBadRequest, ce.msg
	case errors.Is(ce.kind, ErrNotFound):
		return http.StatusNotFound, resultNotFound, ce.msg
	case errors.Is(ce.kind, ErrUsernameTaken):
		return http.StatusConflict, resultConflict, ce.msg
	case errors.Is(ce.kind, ErrTokenExpired), errors.Is(ce.kind, ErrTokenInvalid):
		return http.StatusUnauthorized, resultUnauthorized, ce.msg
	case errors.Is(ce.kind, ErrBanned):
		return http.StatusForbidden, resultForbidden, ce.msg
	}
	return http.StatusInternalServerError, resultError, "internal error"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// Responses carry credentials; no cache may keep them.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
