// Package bus connects Rally to NATS JetStream. With no external URL it runs
// a NATS server inside the process; either way every domain gets the same
// jetstream.JetStream, so moving to an external cluster changes only config.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configures Open.
type Options struct {
	// URL of an external NATS server or cluster; empty embeds one.
	URL string
	// ListenAddr is the embedded server's client listener (host:port, port 0
	// picks a free one), or "off" for in-process connections only.
	ListenAddr string
	// StoreDir holds the embedded JetStream files.
	StoreDir string
	// SyncAlways fsyncs every JetStream write of the embedded server.
	SyncAlways bool
	// ConnectTimeout bounds start-up.
	ConnectTimeout time.Duration
	// Name identifies this client connection to NATS.
	Name   string
	Logger *slog.Logger
}

// Bus is a live NATS connection with JetStream, and the embedded server
// behind it when there is one.
type Bus struct {
	srv    *server.Server // nil when external
	nc     *nats.Conn
	js     jetstream.JetStream
	closed chan struct{}
	log    *slog.Logger
}

// Open starts the embedded server if needed and connects to NATS.
func Open(ctx context.Context, opts Options) (*Bus, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Bus{closed: make(chan struct{}), log: log}
	url := opts.URL
	connOpts := []nats.Option{
		nats.Name(opts.Name),
		nats.Timeout(opts.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	if url == "" {
		srv, err := startEmbedded(opts, log)
		if err != nil {
			return nil, err
		}
		b.srv = srv
		connOpts = append(connOpts, nats.InProcessServer(srv))
	} else {
		connOpts = append(connOpts, nats.RetryOnFailedConnect(false))
	}

	nc, err := nats.Connect(url, connOpts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("bus: connect to nats: %w", err)
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.js = js
	pingCtx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	if err := b.Ping(pingCtx); err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, err
	}
	return b, nil
}

func startEmbedded(opts Options, log *slog.Logger) (*server.Server, error) {
	sopts := &server.Options{
		ServerName: "rally",
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		SyncAlways: opts.SyncAlways,
		NoSigs:     true,
	}
	if opts.ListenAddr == "off" {
		sopts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(opts.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("bus: nats listen address %q: %w", opts.ListenAddr, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("bus: nats listen address %q: bad port", opts.ListenAddr)
		}
		if port == 0 {
			port = server.RANDOM_PORT // nats-server reads 0 as its default port
		}
		sopts.Host, sopts.Port = host, port
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded nats: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats-server")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(opts.ConnectTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		if !sopts.DontListen {
			return nil, fmt.Errorf("bus: embedded nats did not start listening on %s (is the port in use?)", opts.ListenAddr)
		}
		return nil, errors.New("bus: embedded nats did not start")
	}
	return srv, nil
}

// JetStream returns the JetStream API every domain publishes and consumes
// through.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn returns the core NATS connection (request/reply, plain subjects).
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Embedded reports whether the NATS server runs inside this process.
func (b *Bus) Embedded() bool { return b.srv != nil }

// ListenAddr returns the embedded server's client address, or "" when it
// has none (external NATS, or listener off).
func (b *Bus) ListenAddr() string {
	if b.srv == nil {
		return ""
	}
	if addr, ok := b.srv.Addr().(*net.TCPAddr); ok && addr != nil {
		return addr.String()
	}
	return ""
}

// Ping reports whether NATS and JetStream answer.
func (b *Bus) Ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("bus: nats %s", b.nc.Status())
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("bus: jetstream: %w", err)
	}
	return nil
}

// Close drains the connection (pending publishes are flushed) and then shuts
// the embedded server down, which flushes JetStream to disk.
func (b *Bus) Close(ctx context.Context) error {
	var err error
	if drainErr := b.nc.Drain(); drainErr != nil {
		b.nc.Close()
	}
	select {
	case <-b.closed:
	case <-ctx.Done():
		b.nc.Close()
		err = fmt.Errorf("bus: drain: %w", ctx.Err())
	}
	b.shutdownServer()
	return err
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// natsLogger routes the embedded server's log through slog. Its notices are
// start-up chatter, so they go to debug.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
