package leaderboard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// boardsFile is the YAML a studio keeps its boards in (leaderboard.boards):
//
//	boards:
//	  - id: weekly_kills
//	    sort: desc            # desc (default) or asc
//	    operator: incr        # best (default), set, incr, decr
//	    reset: "0 0 * * 1"    # cron; empty never resets
//	    time_zone: Europe/Paris
//	    authoritative: true   # only server code writes
//	    metadata: {title: Weekly kills}
type boardsFile struct {
	Boards []boardYAML `yaml:"boards"`
}

type boardYAML struct {
	ID            string            `yaml:"id"`
	Sort          string            `yaml:"sort"`
	Operator      string            `yaml:"operator"`
	Reset         string            `yaml:"reset"`
	TimeZone      string            `yaml:"time_zone"`
	Authoritative bool              `yaml:"authoritative"`
	Metadata      map[string]string `yaml:"metadata"`
}

// LoadBoardsFile reads and validates a boards file. Errors name the board.
func LoadBoardsFile(path string) ([]Board, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseBoards(data)
}

// ParseBoards reads and validates boards YAML; unknown fields and repeated
// ids are errors.
func ParseBoards(data []byte) ([]Board, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f boardsFile
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s", oneLine(err.Error()))
	}
	seen := map[string]bool{}
	out := make([]Board, 0, len(f.Boards))
	for i, y := range f.Boards {
		name := fmt.Sprintf("board %d (%s)", i+1, y.ID)
		fail := func(err error) error {
			return fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "leaderboard: invalid argument: "))
		}
		sort, err := ParseSortOrder(y.Sort)
		if err != nil {
			return nil, fail(err)
		}
		op, err := ParseOperator(y.Operator)
		if err != nil {
			return nil, fail(err)
		}
		b := Board{ID: y.ID, Sort: sort, Operator: op, Reset: y.Reset, TimeZone: y.TimeZone,
			Authoritative: y.Authoritative, Metadata: y.Metadata}
		if _, err := b.Validate(); err != nil {
			return nil, fail(err)
		}
		if seen[b.ID] {
			return nil, fmt.Errorf("%s: id repeated", name)
		}
		seen[b.ID] = true
		out = append(out, b)
	}
	return out, nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
