package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	typeSession = "session"
	typeRefresh = "refresh"

	reasonExpired   = "expired"
	reasonInvalid   = "invalid"
	reasonWrongType = "wrong_type"
)

// Session is what a verified session token says about its bearer.
type Session struct {
	UserID    string
	Username  string
	SessionID string
	ExpiresAt time.Time
}

// Grant is the result of a login or refresh: the tokens to hand the client
// and whom they identify.
type Grant struct {
	Token        string
	RefreshToken string
	UserID       string
	Username     string
	SessionID    string
	// Created reports whether this call made the account.
	Created bool
	// ExpiresAt is when Token stops being accepted.
	ExpiresAt time.Time
}

// claims is the token payload. The type claim keeps a long-lived refresh
// token from being used where a session token is expected.
type claims struct {
	UserID    string `json:"uid"`
	Username  string `json:"usn,omitempty"`
	SessionID string `json:"sid"`
	Type      string `json:"typ"`
	jwt.RegisteredClaims
}

// issue signs a session token and a refresh token for acc under sid.
func (s *Service) issue(acc Account, sid string, created bool) (Grant, error) {
	now := s.now()
	session := claims{
		UserID:    acc.UserID,
		Username:  acc.Username,
		SessionID: sid,
		Type:      typeSession,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   acc.UserID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.sessionTTL)),
		},
	}
	// The refresh token omits the username: Refresh reads the account anew.
	refresh := session
	refresh.Username = ""
	refresh.Type = typeRefresh
	refresh.ExpiresAt = jwt.NewNumericDate(now.Add(s.refreshTTL))

	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, session).SignedString(s.key)
	if err != nil {
		return Grant{}, fmt.Errorf("auth: sign session token: %w", err)
	}
	refreshToken, err := jwt.NewWithClaims(jwt.SigningMethodHS256, refresh).SignedString(s.key)
	if err != nil {
		return Grant{}, fmt.Errorf("auth: sign refresh token: %w", err)
	}
	return Grant{
		Token:        token,
		RefreshToken: refreshToken,
		UserID:       acc.UserID,
		Username:     acc.Username,
		SessionID:    sid,
		Created:      created,
		ExpiresAt:    session.ExpiresAt.UTC(),
	}, nil
}

// Verify checks a session token: HS256 signature with this service's key,
// not expired, and of type session. Errors wrap ErrTokenExpired or
// ErrTokenInvalid.
func (s *Service) Verify(token string) (Session, error) {
	c, err := s.parse(token, typeSession)
	if err != nil {
		return Session{}, err
	}
	return Session{
		UserID:    c.Subject,
		Username:  c.Username,
		SessionID: c.SessionID,
		ExpiresAt: c.ExpiresAt.UTC(),
	}, nil
}

// Refresh trades a refresh token for a new session token and a new refresh
// token under the same session id, provided the account still exists.
// Refresh tokens are not revoked on use: each stays valid until it expires.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Grant, error) {
	c, err := s.parse(refreshToken, typeRefresh)
	if err != nil {
		return Grant{}, err
	}
	acc, err := s.Account(ctx, c.Subject)
	if errors.Is(err, ErrNotFound) {
		return Grant{}, fail(ErrTokenInvalid, "the account of this refresh token no longer exists")
	}
	if err != nil {
		return Grant{}, err
	}
	return s.issue(acc, c.SessionID, false)
}

// parse verifies token and that it is of type typ, counting each rejection
// by reason.
func (s *Service) parse(token, typ string) (*claims, error) {
	var c claims
	_, err := s.parser.ParseWithClaims(token, &c, s.keyFunc)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		// The signature was checked before expiry, so this token is ours.
		s.rejections.WithLabelValues(reasonExpired).Inc()
		return nil, fail(ErrTokenExpired, typ+" token expired")
	case err != nil, c.Subject == "", c.SessionID == "":
		s.rejections.WithLabelValues(reasonInvalid).Inc()
		return nil, fail(ErrTokenInvalid, "invalid "+typ+" token")
	case c.Type != typ:
		s.rejections.WithLabelValues(reasonWrongType).Inc()
		return nil, fail(ErrTokenInvalid, "not a "+typ+" token")
	}
	return &c, nil
}
