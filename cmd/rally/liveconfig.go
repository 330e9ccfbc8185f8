package main

// rally config validate | diff | assign: live config documents checked,
// compared and evaluated offline, the way CI and an on-call engineer need.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rallyhq/rally/internal/liveconfig"
	"github.com/rallyhq/rally/internal/liveconfig/gitsource"
)

func liveConfigCmds() []*cobra.Command {
	return []*cobra.Command{configValidateCmd(), configDiffCmd(), configAssignCmd()}
}

func configValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate DIR",
		Short: "Validate a live config directory (documents, schemas, experiments); exit 1 on any problem",
		Long: `Validate reads every document and schema under DIR the way a running node
would and prints each problem as FILE: JSON-POINTER: REASON, one per line.
The exit status is 0 when the directory would be accepted, 1 otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			snap, err := buildDir(args[0])
			if err != nil {
				return reportInvalid(cmd.ErrOrStderr(), err)
			}
			exps, rels := 0, 0
			for _, e := range snap.Experiments() {
				if e.Kind == liveconfig.KindRelease {
					rels++
				} else {
					exps++
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d documents, %d keys, %d experiments, %d releases; version %s\n",
				len(snap.Namespaces()), len(snap.Keys()), exps, rels, snap.Version())
			return nil
		},
	}
}

func buildDir(dir string) (*liveconfig.Snapshot, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	files, err := liveconfig.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return liveconfig.Build(files, liveconfig.Options{Source: "dir"})
}

// reportInvalid prints every problem and returns exit status 1.
func reportInvalid(w io.Writer, err error) error {
	var inv *liveconfig.InvalidError
	if !errors.As(err, &inv) {
		return exitError{1, err}
	}
	for _, p := range inv.Problems {
		fmt.Fprintln(w, p.String())
	}
	return exitError{1, fmt.Errorf("invalid configuration: %d problem(s)", len(inv.Problems))}
}

func configDiffCmd() *cobra.Command {
	var repo, path, at string
	cmd := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Show what changes between two live configs: values, experiments, and how many players change variant",
		Long: `Diff compares two live configurations: two directories, or with --repo two
revisions of a Git repository (branches, tags, commit ids, HEAD~1). Values are
compared by key; experiments and releases by id, with the share of players
whose variant would change. Exit status: 0 same, 1 different, 2 trouble.

  rally config diff examples/liveconfig ./edited
  rally config diff --repo . --path config origin/main HEAD`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			now, err := parseAt(at)
			if err != nil {
				return exitError{2, err}
			}
			load := func(arg string) (*liveconfig.Snapshot, error) {
				if repo == "" {
					return buildDir(arg)
				}
				c, err := gitsource.ReadRevision(cmd.Context(), gitsource.Options{URL: repo, Path: path}, arg)
				if err != nil {
					return nil, err
				}
				return liveconfig.Build(c.Files, liveconfig.Options{Version: c.ID, Source: "git"})
			}
			var snaps [2]*liveconfig.Snapshot
			for i, arg := range args {
				if snaps[i], err = load(arg); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s:\n", arg)
					err := reportInvalid(cmd.ErrOrStderr(), err)
					return exitError{2, err}
				}
			}
			changes := liveconfig.Diff(snaps[0], snaps[1], now)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "version %s -> %s\n", snaps[0].Version(), snaps[1].Version())
			for _, c := range changes {
				fmt.Fprintln(out, c.String())
			}
			if len(changes) == 0 {
				fmt.Fprintln(out, "no differences")
				return nil
			}
			return exitError{1, fmt.Errorf("%d difference(s)", len(changes))}
		},
	}
	cmd.Flags().StringVar(&repo, "repo", "", "Git repository (path or URL): OLD and NEW are revisions of it")
	cmd.Flags().StringVar(&path, "path", "", "with --repo: the directory inside the repository holding the documents")
	cmd.Flags().StringVar(&at, "at", "", "evaluate rollout ramps at this RFC 3339 time (default now)")
	return cmd
}

func parseAt(at string) (time.Time, error) {
	if at == "" {
		return time.Now(), nil
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return t, fmt.Errorf("--at %q is not an RFC 3339 time like 2026-03-01T00:00:00Z", at)
	}
	return t, nil
}

func configAssignCmd() *cobra.Command {
	var p liveconfig.Player
	var experiment, at string
	cmd := &cobra.Command{
		Use:   "assign DIR [PLAYER_ID...]",
		Short: "Print the experiments and releases players are in, as a node would assign them",
		Long: `Assign evaluates the live config in DIR for players given as arguments or, if
none, one id per line on standard input, and prints one tab-separated line
per assignment: player id, experiment or release id, variant. With
--experiment, exactly one line per player, "-" when not in it. Assignment is
a hash of ids only, so this agrees with every running node.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			now, err := parseAt(at)
			if err != nil {
				return exitError{2, err}
			}
			snap, err := buildDir(args[0])
			if err != nil {
				return reportInvalid(cmd.ErrOrStderr(), err)
			}
			if experiment != "" && snap.Experiment(experiment) == nil {
				return exitError{2, fmt.Errorf("no experiment or release %q in %s", experiment, args[0])}
			}
			out := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
			defer out.Flush()
			one := func(id string) {
				p.ID = id
				r := snap.Resolve(p, now)
				if experiment != "" {
					v, ok := r.Variant(experiment)
					if !ok {
						v = "-"
					}
					fmt.Fprintf(out, "%s\t%s\t%s\n", id, experiment, v)
					return
				}
				for _, a := range r.Assignments {
					fmt.Fprintf(out, "%s\t%s\t%s\n", id, a.ID, a.Variant)
				}
			}
			if len(args) > 1 {
				for _, id := range args[1:] {
					one(id)
				}
				return nil
			}
			sc := bufio.NewScanner(cmd.InOrStdin())
			for sc.Scan() {
				if id := strings.TrimSpace(sc.Text()); id != "" {
					one(id)
				}
			}
			return sc.Err()
		},
	}
	f := cmd.Flags()
	f.StringVar(&experiment, "experiment", "", "only this experiment or release: one line per player")
	f.StringVar(&at, "at", "", "evaluate at this RFC 3339 time (default now)")
	f.StringVar(&p.Region, "region", "", "player attribute")
	f.StringVar(&p.Device, "device", "", "player attribute")
	f.StringVar(&p.Platform, "platform", "", "player attribute")
	f.StringVar(&p.AppVersion, "app-version", "", "player attribute")
	f.StringSliceVar(&p.Cohorts, "cohort", nil, "player cohort tag (repeatable)")
	return cmd
}
