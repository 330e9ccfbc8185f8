// Package config loads Rally's configuration from defaults, a YAML file, the
// environment and command-line flags (in rising precedence), and rejects
// unknown keys and bad values before anything is started or created.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// Config is the effective configuration of one Rally process.
type Config struct {
	// DataDir holds everything Rally keeps on disk: the store and, when NATS is
	// embedded, the JetStream files.
	DataDir string `koanf:"data_dir"`
	// Dev relaxes production safeguards (for example default signing keys).
	Dev bool `koanf:"dev"`
	// ListenAll binds every loopback listener on all interfaces instead, for
	// containers.
	ListenAll bool `koanf:"listen_all"`

	Log       Log       `koanf:"log"`
	HTTP      HTTP      `koanf:"http"`
	GRPC      Listener  `koanf:"grpc"`
	NATS      NATS      `koanf:"nats"`
	Store     Store     `koanf:"store"`
	Telemetry Telemetry `koanf:"telemetry"`
	Shutdown  Shutdown  `koanf:"shutdown"`
	Auth      Auth      `koanf:"auth"`
	Realtime  Realtime  `koanf:"realtime"`
	Rooms     Rooms     `koanf:"rooms"`
	Events    Events    `koanf:"events"`
	Match     Match     `koanf:"match"`
	// LiveConfig is the live game configuration (docs/liveconfig.md).
	LiveConfig LiveConfig `koanf:"liveconfig"`
	// Chat is the chat service (docs/chat.md).
	Chat Chat `koanf:"chat"`
	// Leaderboard is the leaderboard service (docs/leaderboards.md).
	Leaderboard Leaderboard `koanf:"leaderboard"`
}

// Match configures the matchmaker.
type Match struct {
	// Rules is a YAML file of queues; empty uses the built-in queues.
	Rules string `koanf:"rules"`
	// Store is where tickets wait: memory (this process) or redis (shared
	// by every replica).
	Store    string `koanf:"store"`
	RedisURL string `koanf:"redis_url"`
	// Interval between matching passes.
	Interval time.Duration `koanf:"interval"`
	// Allocator places each match: rooms (an authoritative room on the
	// node that made the match) or gameservers (a dedicated game server
	// allocated by a rally-operator).
	Allocator   string      `koanf:"allocator"`
	GameServers GameServers `koanf:"gameservers"`
}

// GameServers points the matchmaker at a rally-operator's allocation API.
type GameServers struct {
	// Address is the operator's allocation gRPC endpoint, host:port.
	Address string `koanf:"address"`
	// Token is the bearer token the operator was started with, if any.
	Token     string `koanf:"token"`
	Namespace string `koanf:"namespace"`
	// Set is the GameServerSet matches go to; empty means any set of the
	// namespace.
	Set string `koanf:"set"`
	// Port names the server port put in assignments; empty: the first.
	Port string `koanf:"port"`
	// RegionLabel, when set, sends a match with a region only to servers
	// whose label of that name is the region.
	RegionLabel string `koanf:"region_label"`
	// Timeout bounds one allocation.
	Timeout time.Duration `koanf:"timeout"`
}

// LiveConfig configures live game configuration: where versions come
// from and where exposures go.
type LiveConfig struct {
	// Source is none, dir (a watched directory on each node) or git (a
	// branch, published to every node through NATS).
	Source string `koanf:"source"`
	Dir    string `koanf:"dir"`
	// Debounce is how quiet the directory must be before it is reread.
	Debounce time.Duration `koanf:"debounce"`
	// History is how many reloads the admin endpoint lists.
	History int `koanf:"history"`
	// Bucket is the JetStream key-value bucket the git source publishes
	// accepted versions to.
	Bucket string `koanf:"bucket"`
	// ExposureStream holds exposure events (subject rally.config.exposure).
	ExposureStream string        `koanf:"exposure_stream"`
	ExposureMaxAge time.Duration `koanf:"exposure_max_age"`
	Git            LiveConfigGit `koanf:"git"`
}

// LiveConfigGit is the Git branch of the git source.
type LiveConfigGit struct {
	// URL is a local path, file://, ssh:// (or user@host:path) or https://.
	URL    string `koanf:"url"`
	Branch string `koanf:"branch"`
	// Path is the directory inside the repository holding the documents.
	Path string `koanf:"path"`
	// PollInterval between fetches; 0 fetches only when the webhook is
	// called.
	PollInterval time.Duration `koanf:"poll_interval"`
	// WebhookSecret authenticates POST /hooks/liveconfig/git (GitHub's
	// X-Hub-Signature-256 or GitLab's X-Gitlab-Token); empty leaves it open.
	WebhookSecret string `koanf:"webhook_secret"`
	// Username and Password (or token) for HTTPS; SSHKey is a private key
	// file for SSH (else the SSH agent).
	Username string `koanf:"username"`
	Password string `koanf:"password"`
	SSHKey   string `koanf:"ssh_key"`
}

// Leaderboard configures where leaderboards are kept and which boards
// exist from the start.
type Leaderboard struct {
	// Store is embedded (in memory, durable through the store) or redis
	// (shared by every replica).
	Store    string `koanf:"store"`
	RedisURL string `koanf:"redis_url"`
	// Boards is a YAML file of boards created (or updated) at start; empty
	// creates none.
	Boards string `koanf:"boards"`
	// Admins are user ids (comma-separated) allowed to create boards over
	// the API.
	Admins string `koanf:"admins"`
	// MaxMetadataBytes bounds a record's metadata.
	MaxMetadataBytes int `koanf:"max_metadata_bytes"`
}

// Chat configures chat channels, their limits and where they are kept.
type Chat struct {
	// Stream holds every message, edit, delete and presence event
	// (subjects rally.chat.<kind>.<channel>...).
	Stream string `koanf:"stream"`
	// MembersBucket is the JetStream key-value bucket of memberships.
	MembersBucket string `koanf:"members_bucket"`
	// MaxMessageBytes bounds a message's text.
	MaxMessageBytes int `koanf:"max_message_bytes"`
	// MessagesPerSecond and MessageBurst limit each player's sends and
	// edits.
	MessagesPerSecond float64 `koanf:"messages_per_second"`
	MessageBurst      int     `koanf:"message_burst"`
	// HistoryMaxAge is how long messages are kept; 0 keeps them forever.
	HistoryMaxAge time.Duration `koanf:"history_max_age"`
	// SubscriberQueue is how many events may wait for one subscriber
	// before it is disconnected as too slow.
	SubscriberQueue int `koanf:"subscriber_queue"`
	// RoomReplay is how far back a starting node reads the room-event
	// stream to learn who sits in rooms that run on other nodes.
	RoomReplay time.Duration `koanf:"room_replay"`
}

// Auth configures sessions.
type Auth struct {
	// SigningKey signs session and refresh tokens (HMAC-SHA256). Empty means
	// a random key generated on first start and kept in the store; nodes of a
	// cluster must share one explicitly. Outside dev mode a key must be at
	// least 32 bytes.
	SigningKey string        `koanf:"signing_key"`
	SessionTTL time.Duration `koanf:"session_ttl"`
	RefreshTTL time.Duration `koanf:"refresh_ttl"`
}

// Realtime bounds each WebSocket connection.
type Realtime struct {
	MaxFrameBytes int           `koanf:"max_frame_bytes"`
	MaxMsgsPerSec int           `koanf:"max_messages_per_second"`
	MsgBurst      int           `koanf:"message_burst"`
	SendQueue     int           `koanf:"send_queue"`
	ReconnectHold time.Duration `koanf:"reconnect_hold"`
	PingInterval  time.Duration `koanf:"ping_interval"`
	// PongTimeout is how long a ping waits for its pong, whatever the
	// state of the send queue; a socket that misses it is closed, so a
	// client that stops answering is gone within PingInterval+PongTimeout.
	PongTimeout  time.Duration `koanf:"pong_timeout"`
	WriteTimeout time.Duration `koanf:"write_timeout"`
}

// Rooms sets room defaults.
type Rooms struct {
	DefaultTickRate int           `koanf:"default_tick_rate"`
	MaxPlayers      int           `koanf:"max_players"`
	EmptyTimeout    time.Duration `koanf:"empty_timeout"`
	InputQueue      int           `koanf:"input_queue"`
	// InputOverflow is what happens to an input when a player's queue is
	// full: drop_oldest, drop_newest or disconnect.
	InputOverflow string `koanf:"input_overflow"`
	// PositionQuantum is the precision positions are synchronised at, in
	// world units.
	PositionQuantum float64 `koanf:"position_quantum"`
}

// Events configures the room-event stream on JetStream.
type Events struct {
	Stream       string        `koanf:"stream"`
	DeadLetter   string        `koanf:"dead_letter_stream"`
	MaxAge       time.Duration `koanf:"max_age"`
	Retries      int           `koanf:"retries"`
	RetryBackoff time.Duration `koanf:"retry_backoff"`
	// QueueSize bounds the events waiting to be published; a room never
	// waits for room in it: overflow goes to the dead-letter stream.
	QueueSize int `koanf:"queue_size"`
}

// Log selects the log encoding and level.
type Log struct {
	Format string `koanf:"format"` // auto, text or json
	Level  string `koanf:"level"`  // debug, info, warn or error
}

// Listener is a TCP listen address.
type Listener struct {
	Addr string `koanf:"addr"`
}

// HTTP is the HTTP listener and its optional debug endpoints.
type HTTP struct {
	Addr string `koanf:"addr"`
	// Pprof serves Go's profiler under /debug/pprof/. Keep it off on ports
	// the internet reaches.
	Pprof bool `koanf:"pprof"`
	// Advertise is the address players reach this node at (host:port). Match
	// assignments carry it, so a player matched by another replica knows
	// where its room is.
	Advertise string `koanf:"advertise"`
	// AdminToken guards /admin/ endpoints: callers present it as a bearer
	// token. Empty leaves them to loopback callers only.
	AdminToken string `koanf:"admin_token"`
}

// NATS selects between the embedded NATS server and an external one.
type NATS struct {
	// URL of an external NATS server or cluster (comma-separated). Empty runs
	// NATS embedded in the process.
	URL string `koanf:"url"`
	// Addr is the embedded server's client listener; "off" allows in-process
	// connections only.
	Addr string `koanf:"addr"`
	// SyncAlways makes the embedded JetStream fsync every write, so that an
	// acknowledged message survives power loss, not only a process crash.
	SyncAlways bool `koanf:"sync_always"`
	// ConnectTimeout bounds how long start-up waits for NATS.
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
}

// Store selects the durable store.
type Store struct {
	Driver string `koanf:"driver"` // bolt
}

// Telemetry configures tracing.
type Telemetry struct {
	ServiceName string `koanf:"service_name"`
	// OTLPEndpoint is a host:port of an OTLP/gRPC receiver; empty turns trace
	// export off.
	OTLPEndpoint string  `koanf:"otlp_endpoint"`
	OTLPInsecure bool    `koanf:"otlp_insecure"`
	SampleRatio  float64 `koanf:"sample_ratio"`
}

// Shutdown bounds the drain on SIGTERM.
type Shutdown struct {
	// DrainDelay is how long /readyz reports not-ready before listeners close,
	// so load balancers stop sending new work first.
	DrainDelay time.Duration `koanf:"drain_delay"`
	// Timeout bounds the whole drain; past it the process exits anyway.
	Timeout time.Duration `koanf:"timeout"`
}

// defaults is the one place default values live. Its keys are also the set
// of known keys: anything else in a file is rejected.
var defaults = map[string]any{
	"data_dir":                "rally-data",
	"dev":                     false,
	"listen_all":              false,
	"log.format":              "auto",
	"log.level":               "info",
	"http.addr":               "127.0.0.1:7350",
	"http.pprof":              false,
	"http.advertise":          "",
	"http.admin_token":        "",
	"grpc.addr":               "127.0.0.1:7349",
	"nats.url":                "",
	"nats.addr":               "127.0.0.1:4222",
	"nats.sync_always":        false,
	"nats.connect_timeout":    "10s",
	"store.driver":            "bolt",
	"telemetry.service_name":  "rally",
	"telemetry.otlp_endpoint": "",
	"telemetry.otlp_insecure": false,
	"telemetry.sample_ratio":  1.0,
	"shutdown.drain_delay":    "0s",
	"shutdown.timeout":        "15s",

	"auth.signing_key": "",
	"auth.session_ttl": "1h",
	"auth.refresh_ttl": "720h",

	"realtime.max_frame_bytes":         65536,
	"realtime.max_messages_per_second": 60,
	"realtime.message_burst":           120,
	"realtime.send_queue":              256,
	"realtime.reconnect_hold":          "20s",
	"realtime.ping_interval":           "15s",
	"realtime.pong_timeout":            "10s",
	"realtime.write_timeout":           "10s",

	"rooms.default_tick_rate": 20,
	"rooms.max_players":       16,
	"rooms.empty_timeout":     "30s",
	"rooms.input_queue":       64,
	"rooms.input_overflow":    "drop_oldest",
	"rooms.position_quantum":  0.01,

	"events.stream":             "RALLY_ROOM_EVENTS",
	"events.dead_letter_stream": "RALLY_ROOM_EVENTS_DLQ",
	"events.max_age":            "168h",
	"events.retries":            5,
	"events.retry_backoff":      "50ms",
	"events.queue_size":         8192,

	"match.rules":                    "",
	"match.store":                    "memory",
	"match.redis_url":                "",
	"match.interval":                 "20ms",
	"match.allocator":                "rooms",
	"match.gameservers.address":      "",
	"match.gameservers.token":        "",
	"match.gameservers.namespace":    "default",
	"match.gameservers.set":          "",
	"match.gameservers.port":         "",
	"match.gameservers.region_label": "",
	"match.gameservers.timeout":      "5s",

	"leaderboard.store":              "embedded",
	"leaderboard.redis_url":          "",
	"leaderboard.boards":             "",
	"leaderboard.admins":             "",
	"leaderboard.max_metadata_bytes": 2048,

	"chat.stream":              "RALLY_CHAT",
	"chat.members_bucket":      "RALLY_CHAT_MEMBERS",
	"chat.max_message_bytes":   4096,
	"chat.messages_per_second": 5.0,
	"chat.message_burst":       10,
	"chat.history_max_age":     "720h",
	"chat.subscriber_queue":    256,
	"chat.room_replay":         "1h",

	"liveconfig.source":             "none",
	"liveconfig.dir":                "",
	"liveconfig.debounce":           "100ms",
	"liveconfig.history":            50,
	"liveconfig.bucket":             "RALLY_LIVECONFIG",
	"liveconfig.exposure_stream":    "RALLY_CONFIG_EXPOSURES",
	"liveconfig.exposure_max_age":   "720h",
	"liveconfig.git.url":            "",
	"liveconfig.git.branch":         "main",
	"liveconfig.git.path":           "",
	"liveconfig.git.poll_interval":  "30s",
	"liveconfig.git.webhook_secret": "",
	"liveconfig.git.username":       "",
	"liveconfig.git.password":       "",
	"liveconfig.git.ssh_key":        "",
}

// flagKeys maps each command-line flag to the key it sets.
var flagKeys = map[string]string{
	"data-dir":      "data_dir",
	"dev":           "dev",
	"listen-all":    "listen_all",
	"log-format":    "log.format",
	"log-level":     "log.level",
	"http-addr":     "http.addr",
	"grpc-addr":     "grpc.addr",
	"nats-addr":     "nats.addr",
	"nats-url":      "nats.url",
	"otlp-endpoint": "telemetry.otlp_endpoint",
}

// EnvPrefix starts every environment variable Rally reads.
const EnvPrefix = "RALLY_"

// EnvConfigFile names the config file when --config is not given.
const EnvConfigFile = EnvPrefix + "CONFIG"

// EnvName returns the environment variable that sets key, e.g. "http.addr"
// is RALLY_HTTP_ADDR.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// AddFlags registers Rally's configuration flags on fs.
func AddFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML config file (env "+EnvConfigFile+")")
	fs.String("data-dir", "", "directory for durable data (default "+defaults["data_dir"].(string)+")")
	fs.Bool("dev", false, "development mode: relaxes production safeguards")
	fs.Bool("listen-all", false, "bind listeners on all interfaces (containers)")
	fs.String("log-format", "", "log format: auto, text or json")
	fs.String("log-level", "", "log level: debug, info, warn or error")
	fs.String("http-addr", "", "HTTP listen address (default "+defaults["http.addr"].(string)+")")
	fs.String("grpc-addr", "", "gRPC listen address (default "+defaults["grpc.addr"].(string)+")")
	fs.String("nats-addr", "", "embedded NATS client listener, or off (default "+defaults["nats.addr"].(string)+")")
	fs.String("nats-url", "", "external NATS URL(s); empty runs NATS embedded")
	fs.String("otlp-endpoint", "", "OTLP/gRPC trace receiver host:port; empty turns export off")
}

// Result is a loaded configuration with what was noticed on the way.
type Result struct {
	Config Config
	// File is the config file read, if any.
	File string
	// Warnings are problems that do not stop start-up, such as an unknown
	// RALLY_ environment variable.
	Warnings []string

	k *koanf.Koanf
}

// YAML renders the effective configuration.
func (r *Result) YAML() ([]byte, error) {
	return r.k.Marshal(yaml.Parser())
}

// Load builds the configuration: defaults, then the file (from --config or
// RALLY_CONFIG), then RALLY_ environment variables, then flags that were set
// explicitly. environ is usually os.Environ(). It creates nothing on disk.
func Load(fs *pflag.FlagSet, environ []string) (*Result, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return nil, fmt.Errorf("config: defaults: %w", err)
	}
	res := &Result{k: k}
	env := map[string]string{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(name, EnvPrefix) {
			env[name] = value
		}
	}

	res.File = env[EnvConfigFile]
	if fs != nil {
		if f := fs.Lookup("config"); f != nil && f.Changed {
			res.File = f.Value.String()
		}
	}
	if res.File != "" {
		if err := loadFile(k, res.File); err != nil {
			return nil, err
		}
	}

	known := map[string]bool{EnvConfigFile: true}
	for key := range defaults {
		name := EnvName(key)
		known[name] = true
		if v, ok := env[name]; ok {
			if err := k.Set(key, v); err != nil {
				return nil, fmt.Errorf("config: %s: %w", name, err)
			}
		}
	}
	for _, name := range sortedKeys(env) {
		// RALLY_TEST_ variables belong to the test suite, not the server.
		if !known[name] && !strings.HasPrefix(name, EnvPrefix+"TEST_") {
			res.Warnings = append(res.Warnings, fmt.Sprintf("unknown environment variable %s ignored", name))
		}
	}

	if fs != nil {
		var setErr error
		fs.Visit(func(f *pflag.Flag) {
			if key, ok := flagKeys[f.Name]; ok && setErr == nil {
				setErr = k.Set(key, f.Value.String())
			}
		})
		if setErr != nil {
			return nil, fmt.Errorf("config: flags: %w", setErr)
		}
	}

	if err := k.Unmarshal("", &res.Config); err != nil {
		return nil, decodeError(k, err)
	}
	if err := res.Config.Validate(); err != nil {
		return nil, err
	}
	if res.Config.ListenAll {
		for _, key := range []string{"http.addr", "grpc.addr", "nats.addr"} {
			if addr := k.String(key); addr != "off" {
				_ = k.Set(key, allInterfaces(addr))
			}
		}
		if err := k.Unmarshal("", &res.Config); err != nil {
			return nil, decodeError(k, err)
		}
	}
	return res, nil
}

// Default returns the configuration with every key at its default.
func Default() Config {
	res, err := Load(nil, nil)
	if err != nil {
		panic(err) // the compiled-in defaults are tested to be valid
	}
	return res.Config
}

func loadFile(k *koanf.Koanf, path string) error {
	fk := koanf.New(".")
	if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
		return fmt.Errorf("config: %s: %s", path, oneLine(err.Error()))
	}
	for _, key := range fk.Keys() {
		if _, ok := defaults[key]; !ok {
			return fmt.Errorf("config: unknown key %q in %s", key, path)
		}
	}
	return k.Merge(fk)
}

// Validate checks every value and that the data directory can be used,
// without creating anything. The error names the offending key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if !oneOf(c.Log.Format, "auto", "text", "json") {
		bad("log.format", "%q is not one of auto, text, json", c.Log.Format)
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if err := checkAddr(c.HTTP.Addr); err != nil {
		bad("http.addr", "%v", err)
	}
	if err := checkAddr(c.GRPC.Addr); err != nil {
		bad("grpc.addr", "%v", err)
	}
	if c.NATS.Addr != "off" {
		if err := checkAddr(c.NATS.Addr); err != nil {
			bad("nats.addr", "%v (or off)", err)
		}
	}
	if c.NATS.URL != "" {
		for _, u := range strings.Split(c.NATS.URL, ",") {
			if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
				bad("nats.url", "%v", err)
			}
		}
	}
	if c.NATS.ConnectTimeout <= 0 {
		bad("nats.connect_timeout", "must be positive, got %s", c.NATS.ConnectTimeout)
	}
	if !oneOf(c.Store.Driver, "bolt") {
		bad("store.driver", "%q is not one of bolt", c.Store.Driver)
	}
	if c.Telemetry.ServiceName == "" {
		bad("telemetry.service_name", "must not be empty")
	}
	if c.Telemetry.OTLPEndpoint != "" {
		if _, _, err := net.SplitHostPort(c.Telemetry.OTLPEndpoint); err != nil {
			bad("telemetry.otlp_endpoint", "want host:port, got %q", c.Telemetry.OTLPEndpoint)
		}
	}
	if c.Telemetry.SampleRatio < 0 || c.Telemetry.SampleRatio > 1 {
		bad("telemetry.sample_ratio", "must be within [0, 1], got %v", c.Telemetry.SampleRatio)
	}
	if c.Shutdown.DrainDelay < 0 {
		bad("shutdown.drain_delay", "must not be negative, got %s", c.Shutdown.DrainDelay)
	}
	if c.Shutdown.Timeout <= 0 {
		bad("shutdown.timeout", "must be positive, got %s", c.Shutdown.Timeout)
	}
	if c.Auth.SigningKey != "" && !c.Dev && len(c.Auth.SigningKey) < 32 {
		bad("auth.signing_key", "must be at least 32 bytes outside dev mode (got %d)", len(c.Auth.SigningKey))
	}
	if c.Auth.SessionTTL <= 0 || c.Auth.RefreshTTL < c.Auth.SessionTTL {
		bad("auth.session_ttl", "must be positive and at most auth.refresh_ttl")
	}
	positive := map[string]int{
		"realtime.max_frame_bytes": c.Realtime.MaxFrameBytes, "realtime.max_messages_per_second": c.Realtime.MaxMsgsPerSec,
		"realtime.message_burst": c.Realtime.MsgBurst, "realtime.send_queue": c.Realtime.SendQueue,
		"rooms.max_players": c.Rooms.MaxPlayers, "rooms.input_queue": c.Rooms.InputQueue,
		"events.retries": c.Events.Retries, "events.queue_size": c.Events.QueueSize,
	}
	for _, key := range sortedKeys(positive) {
		if positive[key] <= 0 {
			bad(key, "must be positive, got %d", positive[key])
		}
	}
	if c.Realtime.MaxFrameBytes > 16<<20 {
		bad("realtime.max_frame_bytes", "at most 16 MiB, got %d", c.Realtime.MaxFrameBytes)
	}
	if c.Rooms.DefaultTickRate < 1 || c.Rooms.DefaultTickRate > 128 {
		bad("rooms.default_tick_rate", "must be within 1-128 Hz, got %d", c.Rooms.DefaultTickRate)
	}
	if !oneOf(c.Rooms.InputOverflow, "drop_oldest", "drop_newest", "disconnect") {
		bad("rooms.input_overflow", "%q is not one of drop_oldest, drop_newest, disconnect", c.Rooms.InputOverflow)
	}
	if c.Rooms.PositionQuantum <= 0 {
		bad("rooms.position_quantum", "must be positive, got %v", c.Rooms.PositionQuantum)
	}
	durations := map[string]time.Duration{
		"realtime.reconnect_hold": c.Realtime.ReconnectHold, "realtime.ping_interval": c.Realtime.PingInterval,
		"realtime.write_timeout": c.Realtime.WriteTimeout, "rooms.empty_timeout": c.Rooms.EmptyTimeout,
		"realtime.pong_timeout": c.Realtime.PongTimeout,
		"events.max_age":        c.Events.MaxAge, "events.retry_backoff": c.Events.RetryBackoff,
	}
	for _, key := range sortedKeys(durations) {
		if d := durations[key]; d < 0 {
			bad(key, "must not be negative, got %s", d)
		}
	}
	if c.Events.Stream == "" || c.Events.DeadLetter == "" || c.Events.Stream == c.Events.DeadLetter {
		bad("events.stream", "stream and dead_letter_stream must be set and differ")
	}
	if !oneOf(c.Match.Store, "memory", "redis") {
		bad("match.store", "%q is not one of memory, redis", c.Match.Store)
	}
	if c.Match.Store == "redis" {
		if u, err := url.Parse(c.Match.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			bad("match.redis_url", "want redis://host:port/db with match.store redis, got %q", c.Match.RedisURL)
		}
	}
	if c.Match.Interval < time.Millisecond {
		bad("match.interval", "must be at least 1ms, got %s", c.Match.Interval)
	}
	if !oneOf(c.Match.Allocator, "rooms", "gameservers") {
		bad("match.allocator", "%q is not one of rooms, gameservers", c.Match.Allocator)
	}
	if c.Match.Allocator == "gameservers" {
		if _, _, err := net.SplitHostPort(c.Match.GameServers.Address); err != nil {
			bad("match.gameservers.address", "want the operator's allocation endpoint as host:port with match.allocator gameservers, got %q", c.Match.GameServers.Address)
		}
		if c.Match.GameServers.Namespace == "" {
			bad("match.gameservers.namespace", "must not be empty")
		}
	}
	if c.Match.GameServers.Timeout <= 0 {
		bad("match.gameservers.timeout", "must be positive, got %s", c.Match.GameServers.Timeout)
	}
	c.validateLiveConfig(bad)
	c.validateChat(bad)
	c.validateLeaderboard(bad)
	if c.Match.Rules != "" {
		if fi, err := os.Stat(c.Match.Rules); err != nil || fi.IsDir() {
			bad("match.rules", "%s is not a readable file", c.Match.Rules)
		}
	}
	if err := checkDataDir(c.DataDir); err != nil {
		bad("data_dir", "%v", err)
	}
	if len(errs) > 0 {
		// The first problem is reported alone: one clear line beats a list.
		return errs[0]
	}
	return nil
}

// streamName matches names JetStream accepts for streams and buckets.
var streamName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (c *Config) validateLiveConfig(bad func(key, format string, args ...any)) {
	lc := c.LiveConfig
	if !oneOf(lc.Source, "none", "dir", "git") {
		bad("liveconfig.source", "%q is not one of none, dir, git", lc.Source)
	}
	if lc.Source == "dir" {
		if fi, err := os.Stat(lc.Dir); err != nil || !fi.IsDir() {
			bad("liveconfig.dir", "want an existing directory with liveconfig.source dir, got %q", lc.Dir)
		}
	}
	if lc.Debounce < time.Millisecond || lc.Debounce > 10*time.Second {
		bad("liveconfig.debounce", "must be within 1ms-10s, got %s", lc.Debounce)
	}
	if lc.History < 1 || lc.History > 1000 {
		bad("liveconfig.history", "must be within 1-1000, got %d", lc.History)
	}
	if !streamName.MatchString(lc.Bucket) {
		bad("liveconfig.bucket", "%q is not a bucket name (letters, digits, _ and -)", lc.Bucket)
	}
	if !streamName.MatchString(lc.ExposureStream) || lc.ExposureStream == c.Events.Stream || lc.ExposureStream == c.Events.DeadLetter {
		bad("liveconfig.exposure_stream", "%q is not a stream name (letters, digits, _ and -) distinct from the events streams", lc.ExposureStream)
	}
	if lc.ExposureMaxAge < 0 {
		bad("liveconfig.exposure_max_age", "must not be negative, got %s", lc.ExposureMaxAge)
	}
	g := lc.Git
	if lc.Source == "git" {
		if strings.TrimSpace(g.URL) == "" || strings.ContainsAny(g.URL, " \t\n") {
			bad("liveconfig.git.url", "want a repository path or URL with liveconfig.source git, got %q", g.URL)
		}
		if g.Branch == "" {
			bad("liveconfig.git.branch", "must not be empty with liveconfig.source git")
		}
	}
	if g.PollInterval != 0 && g.PollInterval < 50*time.Millisecond {
		bad("liveconfig.git.poll_interval", "must be 0 (webhook only) or at least 50ms, got %s", g.PollInterval)
	}
	if g.SSHKey != "" {
		if fi, err := os.Stat(g.SSHKey); err != nil || fi.IsDir() {
			bad("liveconfig.git.ssh_key", "%s is not a readable file", g.SSHKey)
		}
	}
}

func (c *Config) validateLeaderboard(bad func(key, format string, args ...any)) {
	lb := c.Leaderboard
	if !oneOf(lb.Store, "embedded", "redis") {
		bad("leaderboard.store", "%q is not one of embedded, redis", lb.Store)
	}
	if lb.Store == "redis" {
		if u, err := url.Parse(lb.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			bad("leaderboard.redis_url", "want redis://host:port/db with leaderboard.store redis, got %q", lb.RedisURL)
		}
	}
	if lb.Boards != "" {
		if fi, err := os.Stat(lb.Boards); err != nil || fi.IsDir() {
			bad("leaderboard.boards", "%s is not a readable file", lb.Boards)
		}
	}
	for _, a := range strings.Split(lb.Admins, ",") {
		if a = strings.TrimSpace(a); len(a) > 128 {
			bad("leaderboard.admins", "%q is not a user id", a)
		}
	}
	if lb.MaxMetadataBytes < 1 || lb.MaxMetadataBytes > 64<<10 {
		bad("leaderboard.max_metadata_bytes", "must be within 1-65536, got %d", lb.MaxMetadataBytes)
	}
}

func (c *Config) validateChat(bad func(key, format string, args ...any)) {
	ch := c.Chat
	taken := map[string]bool{c.Events.Stream: true, c.Events.DeadLetter: true, c.LiveConfig.ExposureStream: true}
	if !streamName.MatchString(ch.Stream) || taken[ch.Stream] {
		bad("chat.stream", "%q is not a stream name (letters, digits, _ and -) distinct from the other streams", ch.Stream)
	}
	if !streamName.MatchString(ch.MembersBucket) {
		bad("chat.members_bucket", "%q is not a bucket name (letters, digits, _ and -)", ch.MembersBucket)
	}
	// A message travels in one NATS message (1 MiB by default) and one
	// realtime frame.
	if ch.MaxMessageBytes < 1 || ch.MaxMessageBytes > 256<<10 {
		bad("chat.max_message_bytes", "must be within 1-262144, got %d", ch.MaxMessageBytes)
	}
	if !(ch.MessagesPerSecond > 0) || ch.MessagesPerSecond > 1e6 {
		bad("chat.messages_per_second", "must be positive, got %v", ch.MessagesPerSecond)
	}
	if ch.MessageBurst < 1 {
		bad("chat.message_burst", "must be at least 1, got %d", ch.MessageBurst)
	}
	if ch.SubscriberQueue < 1 || ch.SubscriberQueue > 1<<20 {
		bad("chat.subscriber_queue", "must be within 1-1048576, got %d", ch.SubscriberQueue)
	}
	if ch.HistoryMaxAge < 0 || (ch.HistoryMaxAge > 0 && ch.HistoryMaxAge < time.Minute) {
		bad("chat.history_max_age", "must be 0 (keep forever) or at least 1m, got %s", ch.HistoryMaxAge)
	}
	if ch.RoomReplay < 0 {
		bad("chat.room_replay", "must not be negative, got %s", ch.RoomReplay)
	}
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("host %q is not an IP address or localhost", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number in 0-65535", port)
	}
	return nil
}

func checkNATSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a URL like nats://host:4222", raw)
	}
	if !oneOf(u.Scheme, "nats", "tls", "ws", "wss") {
		return fmt.Errorf("%q: scheme must be nats, tls, ws or wss", raw)
	}
	return nil
}

// checkDataDir accepts an existing writable directory, or a path whose
// nearest existing ancestor is a writable directory (it is created later).
func checkDataDir(dir string) error {
	if dir == "" {
		return errors.New("must not be empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("%s is not a directory", p)
		case err == nil:
			if unix.Access(p, unix.W_OK|unix.X_OK) != nil {
				return fmt.Errorf("%s is not writable", p)
			}
			if p == abs && unix.Access(p, unix.R_OK) != nil {
				return fmt.Errorf("%s is not readable", p)
			}
			return nil
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("%s: %v", p, unwrapPathError(err))
		}
		if filepath.Dir(p) == p {
			return fmt.Errorf("no existing parent of %s", abs)
		}
	}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// allInterfaces rewrites a loopback host to the unspecified address.
func allInterfaces(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return net.JoinHostPort("0.0.0.0", port)
	}
	return addr
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

// decodeKey finds the key in a decoder message such as
// "decoding failed ...: 'shutdown.timeout' time: invalid duration".
var decodeKey = regexp.MustCompile(`'([a-z_.]+)' (.*)$`)

// decodeError turns a type error into one line: the key, the problem and
// the value that was given.
func decodeError(k *koanf.Koanf, err error) error {
	msg := oneLine(err.Error())
	if m := decodeKey.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("config: %s: %s (got %q)", m[1], m[2], fmt.Sprint(k.Get(m[1])))
	}
	return fmt.Errorf("config: %s", msg)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
