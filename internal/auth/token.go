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
	reasonEnded     = "ended"
	reasonReused    = "reused"
	reasonBanned    = "banned"
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

// issue signs a session token and a refresh token for acc under sid. With
// revocations, a new session's family is recorded; refresh (set by
// Refresh) is the id its rotation already recorded.
func (s *Service) issue(ctx context.Context, acc Account, sid string, created bool, refreshID string) (Grant, error) {
	now := s.now()
	if refreshID == "" {
		refreshID = newID()
		if s.rev != nil {
			if err := s.rev.start(ctx, sid, refreshID); err != nil {
				return Grant{}, fmt.Errorf("auth: record session: %w", err)
			}
		}
	}
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
	refresh.ID = refreshID

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
	if err := s.checkRevoked(c); err != nil {
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
// token under the same session id, provided the account still exists. With
// revocations each refresh token works once: using one again (a stolen
// copy, or a replay) ends the whole session, so the thief and the player
// both lose it and the player signs in again.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Grant, error) {
	c, err := s.parse(refreshToken, typeRefresh)
	if err != nil {
		return Grant{}, err
	}
	if err := s.checkRevoked(c); err != nil {
		return Grant{}, err
	}
	acc, err := s.Account(ctx, c.Subject)
	if errors.Is(err, ErrNotFound) {
		return Grant{}, fail(ErrTokenInvalid, "the account of this refresh token no longer exists")
	}
	if err != nil {
		return Grant{}, err
	}
	var next string
	if s.rev != nil {
		next = newID()
		switch err := s.rev.rotate(ctx, c.SessionID, c.ID, next); {
		case errors.Is(err, errReused):
			s.rejections.WithLabelValues(reasonReused).Inc()
			if err := s.rev.end(ctx, c.Subject, c.SessionID, c.ExpiresAt.Time); err != nil {
				return Grant{}, err
			}
			s.revocations.WithLabelValues("reuse").Inc()
			s.log.Warn("refresh token reused: session ended", "player.id", c.Subject, "session.id", c.SessionID)
			return Grant{}, fail(ErrTokenInvalid, "refresh token already used: the session has ended, sign in again")
		case err != nil:
			return Grant{}, err
		}
	}
	return s.issue(ctx, acc, c.SessionID, false, next)
}

// checkRevoked refuses a token of an ended session or a banned player.
func (s *Service) checkRevoked(c *claims) error {
	if s.rev == nil {
		return nil
	}
	if s.rev.Ended(c.SessionID) {
		s.rejections.WithLabelValues(reasonEnded).Inc()
		return fail(ErrTokenInvalid, "session ended")
	}
	if b, ok := s.rev.Banned(c.Subject); ok {
		s.rejections.WithLabelValues(reasonBanned).Inc()
		return fail(ErrBanned, banMessage(b))
	}
	return nil
}

// Logout ends a session on every node: its session and refresh tokens are
// refused from now on and its socket is closed.
func (s *Service) Logout(ctx context.Context, sess Session) error {
	if s.rev == nil {
		return errors.New("auth: sessions cannot be ended without revocations")
	}
	if err := s.rev.end(ctx, sess.UserID, sess.SessionID, s.now().Add(s.refreshTTL)); err != nil {
		return err
	}
	s.revocations.WithLabelValues("logout").Inc()
	return nil
}

// Ban keeps a player out on every node until Unban (or until, when not
// zero): their sessions end, their sockets close, and they cannot sign in.
// The id is not looked up: a node may not hold every account.
func (s *Service) Ban(ctx context.Context, userID, reason string, until time.Time) (Ban, error) {
	if s.rev == nil {
		return Ban{}, errors.New("auth: bans need revocations")
	}
	if !validKey(userID) {
		return Ban{}, fail(ErrInvalidInput, "not a user id")
	}
	if len(reason) > 512 {
		return Ban{}, fail(ErrInvalidInput, "reason: at most 512 bytes")
	}
	b := Ban{Reason: reason, At: s.now().UTC(), Until: until.UTC()}
	if until.IsZero() {
		b.Until = time.Time{}
	}
	if err := s.rev.ban(ctx, userID, b); err != nil {
		return Ban{}, err
	}
	s.revocations.WithLabelValues("ban").Inc()
	s.log.Info("player banned", "player.id", userID, "reason", reason, "until", b.Until)
	return b, nil
}

// Unban lifts a ban; false if there was none.
func (s *Service) Unban(ctx context.Context, userID string) (bool, error) {
	if s.rev == nil || !validKey(userID) {
		return false, nil
	}
	ok, err := s.rev.unban(ctx, userID)
	if ok {
		s.revocations.WithLabelValues("unban").Inc()
		s.log.Info("player unbanned", "player.id", userID)
	}
	return ok, err
}

// BanOf returns the ban in force on a player, if any.
func (s *Service) BanOf(userID string) (Ban, bool) {
	if s.rev == nil {
		return Ban{}, false
	}
	return s.rev.Banned(userID)
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
