package auth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rallyhq/rally/internal/store"
)

// Buckets. Accounts are keyed by user id; the others map a credential to
// the user id that owns it.
const (
	accountsBucket  = "auth_accounts"
	usernamesBucket = "auth_usernames"
	devicesBucket   = "auth_device_ids"
	customsBucket   = "auth_custom_ids"
)

const maxUsername = 64

// Account is a player's durable record.
type Account struct {
	UserID    string    `json:"user_id"`
	Username  string    `json:"username"`
	CreatedAt time.Time `json:"created_at"`
}

// idKind is one way to log in: an opaque id the client holds.
type idKind struct {
	name     string // for messages
	endpoint string // metrics label and span name
	bucket   string
	min, max int
}

var (
	deviceID = idKind{name: "device id", endpoint: endpointDevice, bucket: devicesBucket, min: 10, max: 128}
	customID = idKind{name: "custom id", endpoint: endpointCustom, bucket: customsBucket, min: 6, max: 128}
)

func (k idKind) validate(id string) error {
	if !utf8.ValidString(id) || strings.IndexFunc(id, unicode.IsControl) >= 0 {
		return fail(ErrInvalidInput, k.name+" must be valid UTF-8 without control characters")
	}
	if n := utf8.RuneCountInString(id); n < k.min || n > k.max {
		return fail(ErrInvalidInput, fmt.Sprintf("%s must be %d-%d characters, got %d", k.name, k.min, k.max, n))
	}
	return nil
}

func validateUsername(name string) error {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fail(ErrInvalidInput, fmt.Sprintf("username may contain only letters, digits, '.', '_' and '-'; got %q", r))
		}
	}
	// The characters are ASCII by now, so bytes count characters.
	if name == "" || len(name) > maxUsername {
		return fail(ErrInvalidInput, fmt.Sprintf("username must be 1-%d characters, got %d", maxUsername, len(name)))
	}
	return nil
}

// usernameKey makes uniqueness case-insensitive, so "Alice" cannot
// impersonate "alice"; the account keeps the spelling it chose.
func usernameKey(name string) string { return strings.ToLower(name) }

// newID returns 128 random bits as lower-case base32: URL-safe and without
// dots, so ids are usable as NATS subject tokens.
func newID() string { return strings.ToLower(rand.Text()) }

// AuthenticateDevice logs in with a device id, creating the account when
// create is set and none exists. username is used only on creation; empty
// means generate one.
func (s *Service) AuthenticateDevice(ctx context.Context, id, username string, create bool) (Grant, error) {
	return s.authenticate(ctx, deviceID, id, username, create)
}

// AuthenticateCustom is AuthenticateDevice for ids issued by the game's own
// identity system.
func (s *Service) AuthenticateCustom(ctx context.Context, id, username string, create bool) (Grant, error) {
	return s.authenticate(ctx, customID, id, username, create)
}

func (s *Service) authenticate(ctx context.Context, kind idKind, id, username string, create bool) (Grant, error) {
	if err := kind.validate(id); err != nil {
		return Grant{}, err
	}
	if username != "" {
		if err := validateUsername(username); err != nil {
			return Grant{}, err
		}
	}
	acc, err := s.lookup(ctx, kind, id)
	created := false
	switch {
	case err == nil:
	case !errors.Is(err, ErrNotFound):
		return Grant{}, err
	case !create:
		return Grant{}, fail(ErrNotFound, "no account for this "+kind.name+"; send create=true to make one")
	default:
		if acc, created, err = s.create(ctx, kind, id, username); err != nil {
			return Grant{}, err
		}
	}
	if b, ok := s.BanOf(acc.UserID); ok {
		return Grant{}, fail(ErrBanned, banMessage(b))
	}
	return s.issue(ctx, acc, newID(), created, "")
}

// Account returns the account with the given user id, or ErrNotFound.
func (s *Service) Account(ctx context.Context, userID string) (Account, error) {
	data, err := s.st.Get(ctx, accountsBucket, userID)
	if errors.Is(err, store.ErrNotFound) {
		return Account{}, fail(ErrNotFound, "no such account")
	}
	if err != nil {
		return Account{}, fmt.Errorf("auth: account %s: %w", userID, err)
	}
	var acc Account
	if err := json.Unmarshal(data, &acc); err != nil {
		return Account{}, fmt.Errorf("auth: account %s: %w", userID, err)
	}
	return acc, nil
}

// lookup finds the account an id maps to, or ErrNotFound.
func (s *Service) lookup(ctx context.Context, kind idKind, id string) (Account, error) {
	uid, err := s.st.Get(ctx, kind.bucket, id)
	if errors.Is(err, store.ErrNotFound) {
		return Account{}, ErrNotFound
	}
	if err != nil {
		return Account{}, fmt.Errorf("auth: %s lookup: %w", kind.name, err)
	}
	acc, err := s.Account(ctx, string(uid))
	if errors.Is(err, ErrNotFound) {
		// The record is written before the mapping, so this is damage, not a
		// race; not-found here would invite a create that can never win.
		return Account{}, fmt.Errorf("auth: %s maps to missing account %s", kind.name, uid)
	}
	return acc, err
}

// create makes an account for id. The id mapping is written last with
// PutIfAbsent: it is the commit point, so a concurrent create that loses the
// race discards its own records and returns the winner's account.
func (s *Service) create(ctx context.Context, kind idKind, id, username string) (Account, bool, error) {
	mu := &s.createLocks[maphash.String(s.lockSeed, kind.bucket+"\x00"+id)%uint64(len(s.createLocks))]
	mu.Lock()
	defer mu.Unlock()
	// Another request may have created it while this one waited.
	if acc, err := s.lookup(ctx, kind, id); !errors.Is(err, ErrNotFound) {
		return acc, false, err
	}

	uid := newID()
	name, err := s.claimUsername(ctx, username, uid)
	if errors.Is(err, ErrUsernameTaken) {
		// A create on another node may hold the name for this very id.
		if acc, lerr := s.lookup(ctx, kind, id); lerr == nil {
			return acc, false, nil
		}
	}
	if err != nil {
		return Account{}, false, err
	}
	acc := Account{UserID: uid, Username: name, CreatedAt: s.now().UTC()}
	data, err := json.Marshal(acc)
	if err != nil {
		s.discard(ctx, acc)
		return Account{}, false, fmt.Errorf("auth: encode account: %w", err)
	}
	if err := s.st.Put(ctx, accountsBucket, uid, data); err != nil {
		s.discard(ctx, acc)
		return Account{}, false, fmt.Errorf("auth: store account: %w", err)
	}
	owner, won, err := s.st.PutIfAbsent(ctx, kind.bucket, id, []byte(uid))
	if err != nil {
		s.discard(ctx, acc)
		return Account{}, false, fmt.Errorf("auth: store %s: %w", kind.name, err)
	}
	if !won {
		s.discard(ctx, acc)
		winner, err := s.Account(ctx, string(owner))
		return winner, false, err
	}
	s.created.Inc()
	s.log.Debug("account created", "user_id", uid, "username", name, "via", kind.name)
	return acc, true, nil
}

// claimUsername reserves username for uid, or a generated name when
// username is empty.
func (s *Service) claimUsername(ctx context.Context, username, uid string) (string, error) {
	if username != "" {
		_, ok, err := s.st.PutIfAbsent(ctx, usernamesBucket, usernameKey(username), []byte(uid))
		if err != nil {
			return "", fmt.Errorf("auth: claim username: %w", err)
		}
		if !ok {
			return "", fail(ErrUsernameTaken, fmt.Sprintf("username %q is taken", username))
		}
		return username, nil
	}
	// 50 random bits: a collision is rare, a few retries make it moot.
	for range 5 {
		name := "player-" + newID()[:10]
		_, ok, err := s.st.PutIfAbsent(ctx, usernamesBucket, usernameKey(name), []byte(uid))
		if err != nil {
			return "", fmt.Errorf("auth: claim username: %w", err)
		}
		if ok {
			return name, nil
		}
	}
	return "", errors.New("auth: could not generate a free username")
}

// discard undoes a create that did not commit. Cleanup must run even when
// the request was cancelled, or the username would stay reserved.
func (s *Service) discard(ctx context.Context, acc Account) {
	ctx = context.WithoutCancel(ctx)
	if err := s.st.Delete(ctx, accountsBucket, acc.UserID); err != nil {
		s.log.Warn("auth: discard account", "user_id", acc.UserID, "err", err)
	}
	if acc.Username == "" {
		return
	}
	if err := s.st.Delete(ctx, usernamesBucket, usernameKey(acc.Username)); err != nil {
		s.log.Warn("auth: release username", "username", acc.Username, "err", err)
	}
}
