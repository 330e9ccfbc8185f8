package main

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rallyhq/rally/bench"
)

func leaderboardBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leaderboard",
		Short: "Load one leaderboard with N records; report submits/s, around and rank queries/s and rank latency",
		Args:  cobra.NoArgs,
	}
	var opts bench.LeaderboardOptions
	f := cmd.Flags()
	f.StringVar(&opts.Backend, "backend", bench.LeaderboardEmbedded, "embedded (in memory, durable in a bbolt store) or redis")
	f.IntVar(&opts.Records, "records", 1_000_000, "records loaded onto the board before measuring")
	f.StringVar(&opts.RedisURL, "redis-url", "", "redis://host:port/db for --backend redis; empty starts a throwaway redis-server")
	f.IntVar(&opts.Writers, "writers", 256, "goroutines calling Submit")
	f.IntVar(&opts.Readers, "readers", 0, "goroutines calling Around and Rank (0: one per core for embedded, 32 for redis)")
	f.IntVar(&opts.Batch, "batch", 16, "writes per SubmitMany call in the batched phase")
	f.DurationVar(&opts.Duration, "duration", 5*time.Second, "length of each measured phase")
	f.StringVar(&opts.DataDir, "data-dir", "", "directory of the embedded store (default: a temporary one, removed)")
	f.StringVar(&opts.JSONFile, "json", "", "also write the result as JSON to this file")
	cpuProfile := f.String("cpuprofile", "", "write a CPU profile of the run to this file")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		opts.Progress = os.Stderr
		// Everything runs in this process: there is no server binary.
		none := "in-process"
		return runLoad(cmd.Context(), *cpuProfile, none, &none, func(ctx context.Context) error {
			res, err := bench.Leaderboard(ctx, opts)
			if err != nil {
				return err
			}
			res.WriteTable(os.Stdout)
			return nil
		})
	}
	return cmd
}
