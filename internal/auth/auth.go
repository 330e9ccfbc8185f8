// Package auth identifies players: it keeps their accounts in the store and
// issues and verifies the signed session tokens every other API trusts.
package auth

import (
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/rallyhq/rally/internal/store"
)

// Errors callers branch on. Errors returned by Service wrap one of these and
// carry a message fit to show the client.
var (
	ErrInvalidInput  = errors.New("auth: invalid input")
	ErrNotFound      = errors.New("auth: account not found")
	ErrUsernameTaken = errors.New("auth: username taken")
	ErrTokenExpired  = errors.New("auth: token expired")
	ErrTokenInvalid  = errors.New("auth: invalid token")
)

// clientError pairs a sentinel (for errors.Is and status codes) with a
// message that is safe and useful to return to the client verbatim.
type clientError struct {
	kind error
	msg  string
}

func (e *clientError) Error() string { return "auth: " + e.msg }
func (e *clientError) Unwrap() error { return e.kind }

func fail(kind error, msg string) error { return &clientError{kind: kind, msg: msg} }

// Options configures a Service.
type Options struct {
	// Key signs and verifies tokens (HMAC-SHA256); see ResolveKey.
	Key []byte
	// SessionTTL is how long a session token is accepted.
	SessionTTL time.Duration
	// RefreshTTL is how long a refresh token can mint new session tokens.
	RefreshTTL time.Duration
	// Now is the clock; nil means time.Now. Tests inject one to expire tokens.
	Now func() time.Time
	// Revocations, when set, make sessions endable (logout, refresh-token
	// rotation with reuse detection, bans). Without them tokens are good
	// until they expire.
	Revocations *Revocations
}

// Service authenticates players and verifies their session tokens. It is
// safe for concurrent use.
type Service struct {
	st         store.Store
	key        []byte
	sessionTTL time.Duration
	refreshTTL time.Duration
	now        func() time.Time
	log        *slog.Logger
	tracer     trace.Tracer
	parser     *jwt.Parser
	keyFunc    jwt.Keyfunc

	// createLocks serialise account creation per id within this process, so
	// that concurrent first logins of one device (the common retry storm)
	// resolve to one account without spurious username conflicts. Striped
	// rather than per id so memory stays bounded; PutIfAbsent on the id
	// mapping still guards against other processes sharing the store.
	createLocks [64]sync.Mutex
	lockSeed    maphash.Seed

	rev *Revocations

	// optional lists the gRPC methods that may be called without a
	// session (SessionOptional); written before serving only.
	optional map[string]bool

	requests    *prometheus.CounterVec
	rejections  *prometheus.CounterVec
	created     prometheus.Counter
	revocations *prometheus.CounterVec
}

// New returns a Service persisting through st and registering its metrics on
// reg (nil skips registration). log may be nil.
func New(st store.Store, opts Options, reg prometheus.Registerer, log *slog.Logger) (*Service, error) {
	switch {
	case st == nil:
		return nil, errors.New("auth: nil store")
	case len(opts.Key) == 0:
		return nil, errors.New("auth: empty signing key")
	case opts.SessionTTL <= 0:
		return nil, errors.New("auth: session TTL must be positive")
	case opts.RefreshTTL < opts.SessionTTL:
		return nil, errors.New("auth: refresh TTL must be at least the session TTL")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		st:         st,
		key:        append([]byte(nil), opts.Key...),
		sessionTTL: opts.SessionTTL,
		refreshTTL: opts.RefreshTTL,
		now:        opts.Now,
		log:        log,
		rev:        opts.Revocations,
		tracer:     otel.Tracer("rally/auth"),
		lockSeed:   maphash.MakeSeed(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_auth_requests_total",
			Help: "Authentication requests by endpoint and result.",
		}, []string{"endpoint", "result"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_auth_token_rejections_total",
			Help: "Tokens refused, by reason: expired, invalid, wrong_type, ended (logout or revoked family), reused (a refresh token used twice) or banned.",
		}, []string{"reason"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_auth_revocations_total",
			Help: "Sessions ended before expiry and bans, by kind: logout, reuse, ban, unban.",
		}, []string{"kind"}),
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_auth_accounts_created_total",
			Help: "Player accounts created.",
		}),
	}
	// Only HS256: pinning the algorithm is what stops "alg: none" and
	// algorithm-confusion tokens.
	s.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(opts.Now),
	)
	s.keyFunc = func(*jwt.Token) (any, error) { return s.key, nil }

	// Zero-valued series show up on dashboards before the first event.
	for _, reason := range []string{reasonExpired, reasonInvalid, reasonWrongType, reasonEnded, reasonReused, reasonBanned} {
		s.rejections.WithLabelValues(reason)
	}
	for _, ep := range []string{endpointDevice, endpointCustom, endpointRefresh, endpointLogout} {
		s.requests.WithLabelValues(ep, resultOK)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.requests, s.rejections, s.created, s.revocations} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}
