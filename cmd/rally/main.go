// Command rally is the Rally game backend: `rally serve` runs it, `rally
// bench` measures it, `rally config print` shows what it would run with.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rallyhq/rally/bench"
	"github.com/rallyhq/rally/internal/buildinfo"
	"github.com/rallyhq/rally/internal/config"
	"github.com/rallyhq/rally/internal/server"
	"github.com/rallyhq/rally/internal/telemetry"
)

// exitError carries a process exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func main() {
	root := &cobra.Command{
		Use:           "rally",
		Short:         "Rally: a cloud-native game backend",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), configCmd(), versionCmd(), benchCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "rally: %v\n", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func serveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Rally server (embedded NATS and store unless configured otherwise)",
		Args:  cobra.NoArgs,
	}
	config.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		res, err := config.Load(cmd.Flags(), os.Environ())
		if err != nil {
			return exitError{2, err}
		}
		return serve(res)
	}
	return cmd
}

// serve runs until SIGINT or SIGTERM, then drains within the shutdown
// timeout. A second signal exits at once.
func serve(res *config.Result) error {
	cfg := res.Config
	log := telemetry.NewLogger(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	for _, w := range res.Warnings {
		log.Warn(w)
	}
	if res.File != "" {
		log.Info("config loaded", "file", res.File)
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startErr := make(chan error, 1)
	srv := server.New(cfg, log)
	go func() { startErr <- srv.Start(ctx) }()

	var cause string
	select {
	case err := <-startErr:
		if err != nil {
			return exitError{1, err}
		}
		select {
		case sig := <-sigs:
			cause = sig.String()
		case err := <-srv.Err():
			log.Error("serving failed", "err", err)
			cause = "error"
		}
	case sig := <-sigs:
		// A signal during start-up: cancel it, then drain what started.
		cancel()
		cause = sig.String()
		<-startErr
	}

	log.Info("shutting down", "cause", cause, "timeout", cfg.Shutdown.Timeout)
	go func() {
		sig := <-sigs
		log.Warn("second signal: exiting now", "signal", sig.String())
		os.Exit(130)
	}()
	shutdownCtx, stop := context.WithTimeout(context.Background(), cfg.Shutdown.Timeout)
	defer stop()
	start := time.Now()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Error("shutdown incomplete", "err", err, "took", time.Since(start))
		return exitError{1, fmt.Errorf("shutdown: %w", err)}
	}
	log.Info("stopped", "took", time.Since(start))
	if cause == "error" {
		return exitError{1, errors.New("stopped after a serving error")}
	}
	return nil
}

func configCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the server configuration; validate, diff and evaluate live config"}
	printCmd := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (defaults < file < env < flags)",
		Args:  cobra.NoArgs,
	}
	config.AddFlags(printCmd.Flags())
	printCmd.RunE = func(cmd *cobra.Command, _ []string) error {
		res, err := config.Load(cmd.Flags(), os.Environ())
		if err != nil {
			return exitError{2, err}
		}
		for _, w := range res.Warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
		out, err := res.YAML()
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(out)
		return err
	}
	cmd.AddCommand(printCmd)
	cmd.AddCommand(liveConfigCmds()...)
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			i := buildinfo.Get()
			fmt.Printf("rally %s (commit %s, built %s, %s)\n", i.Version, i.Commit, i.Date, i.GoVersion)
		},
	}
}

func benchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Run load and start-up scenarios"}
	cold := &cobra.Command{
		Use:   "coldstart",
		Short: "Start the rally binary N times with fresh data dirs; report exec-to-ready latency",
		Args:  cobra.NoArgs,
	}
	var opts bench.ColdstartOptions
	cold.Flags().IntVar(&opts.Runs, "runs", 30, "number of starts")
	cold.Flags().StringVar(&opts.Binary, "binary", "", "rally binary to start (default: this one)")
	cold.Flags().StringVar(&opts.JSONFile, "json", "", "also write the result as JSON to this file")
	cold.Flags().DurationVar(&opts.Timeout, "timeout", 10*time.Second, "give up on a start after this long")
	cold.Flags().BoolVar(&opts.Match, "match", false, "also measure exec to the first pair matched (two players, duel queue)")
	cold.RunE = func(cmd *cobra.Command, _ []string) error {
		if opts.Binary == "" {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			opts.Binary = exe
		}
		res, err := bench.Coldstart(cmd.Context(), opts)
		if err != nil {
			return err
		}
		res.WriteTable(os.Stdout)
		return nil
	}
	cmd.AddCommand(cold)
	cmd.AddCommand(syncCmd())
	cmd.AddCommand(matchCmd())
	cmd.AddCommand(leaderboardBenchCmd())
	return cmd
}

func syncCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Load realtime rooms with many clients; report input-to-peer latency, throughput and server resources",
		Args:  cobra.NoArgs,
	}
	var opts bench.SyncOptions
	f := cmd.Flags()
	f.StringVar(&opts.Target, "target", "", "base URL of a running server (http://host:port); empty starts --binary")
	f.StringVar(&opts.Binary, "binary", "", "rally binary to start when --target is empty (default: this one)")
	f.IntVar(&opts.Clients, "clients", 500, "simulated players")
	f.IntVar(&opts.RoomSize, "room-size", 10, "players per room")
	f.IntVar(&opts.Payload, "payload", 128, "input payload bytes")
	f.Float64Var(&opts.Rate, "rate", 16.8, "inputs per second per client")
	f.DurationVar(&opts.Duration, "duration", 20*time.Second, "measured window")
	f.DurationVar(&opts.Warmup, "warmup", 3*time.Second, "load before the measured window, not counted")
	f.StringVar(&opts.Mode, "mode", bench.SyncRelayed, "room kind: relayed or authoritative (the arena)")
	f.IntVar(&opts.TickRate, "tick-rate", 30, "ticks per second of authoritative rooms")
	f.StringVar(&opts.JSONFile, "json", "", "also write the result as JSON to this file")
	f.IntVar(&opts.ConnectConcurrency, "connect-concurrency", 50, "concurrent logins, dials and joins")
	cpuProfile := f.String("cpuprofile", "", "write the load generator's CPU profile to this file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		opts.Progress = os.Stderr
		return runLoad(cmd.Context(), *cpuProfile, opts.Target, &opts.Binary, func(ctx context.Context) error {
			res, err := bench.Sync(ctx, opts)
			if err != nil {
				return err
			}
			res.WriteTable(os.Stdout)
			return nil
		})
	}
	return cmd
}

// runLoad is the shell every load scenario runs in: an optional CPU profile
// of the load generator, this binary as the server unless a target is
// given, and Ctrl-C ending the run cleanly (stopping servers it started).
func runLoad(ctx context.Context, cpuProfile, target string, binary *string, run func(context.Context) error) error {
	if cpuProfile != "" {
		out, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if target == "" && *binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*binary = exe
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx)
}

func matchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "match",
		Short: "Keep many FindOpponent streams open; report match throughput, time to match, rating spread and double assignments",
		Args:  cobra.NoArgs,
	}
	var opts bench.MatchOptions
	f := cmd.Flags()
	f.StringVar(&opts.Target, "target", "", "HTTP host:port of a running server (comma-separated for several); empty starts --binary")
	f.StringVar(&opts.GRPCTarget, "grpc-target", "", "gRPC host:port of each --target, in the same order")
	f.StringVar(&opts.Binary, "binary", "", "rally binary to start when --target is empty (default: this one)")
	f.IntVar(&opts.Clients, "clients", 10000, "FindOpponent streams kept open at all times")
	f.IntVar(&opts.Players, "players", 0, "distinct accounts, each with one open ticket at a time (default: --clients)")
	f.Float64Var(&opts.Rate, "rate", 0, "new tickets per second over all clients (0: as fast as the clients go)")
	f.StringVar(&opts.Queue, "queue", "duel", "matchmaking queue")
	f.DurationVar(&opts.Duration, "duration", 20*time.Second, "measured window")
	f.DurationVar(&opts.Warmup, "warmup", 3*time.Second, "load before the measured window, not counted")
	f.IntVar(&opts.ConnectConcurrency, "connect-concurrency", 64, "concurrent logins")
	f.IntVar(&opts.GRPCConns, "grpc-conns", 16, "gRPC connections the streams are spread over (at least one per server)")
	f.Uint64Var(&opts.Seed, "seed", 1, "seed of the players' ratings and region latencies")
	f.StringVar(&opts.RedisURL, "redis", "", "redis://host:port/db: started servers share this Redis pool (match.store redis)")
	f.IntVar(&opts.Replicas, "replicas", 1, "servers to start on the --redis pool; clients are spread over them round robin")
	f.StringVar(&opts.JSONFile, "json", "", "also write the result as JSON to this file")
	cpuProfile := f.String("cpuprofile", "", "write the load generator's CPU profile to this file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		opts.Progress = os.Stderr
		return runLoad(cmd.Context(), *cpuProfile, opts.Target, &opts.Binary, func(ctx context.Context) error {
			res, err := bench.Match(ctx, opts)
			if err != nil {
				return err
			}
			res.WriteTable(os.Stdout)
			return nil
		})
	}
	return cmd
}
