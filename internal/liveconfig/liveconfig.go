// Package liveconfig holds a game's live configuration: documents of
// namespaced values with JSON Schemas beside them, gray releases and A/B
// experiments resolved per player, swapped atomically when a new version is
// accepted and served over gRPC and to server code.
//
// A configuration is a set of files (Files). Build parses and validates all
// of them into an immutable Snapshot or refuses them whole with every
// Problem found; Live keeps the snapshot in force and swaps it in one atomic
// step, so a reader sees either the old or the new version, never a mix.
// Where the files come from (a watched directory, a Git commit published
// over NATS) is the business of the sub-packages.
package liveconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Files is a configuration as files: slash-separated paths relative to the
// configuration root, mapped to their contents.
type Files map[string][]byte

// Paths returns the paths in order.
func (f Files) Paths() []string {
	out := make([]string, 0, len(f))
	for p := range f {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Supported reports whether a path (slash-separated, relative) is part of
// a configuration: a YAML or JSON document or a JSON Schema, not hidden
// (no segment starts with a dot, which skips .git and editors' swap files)
// and not a backup (~).
func Supported(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") || strings.HasSuffix(seg, "~") {
			return false
		}
	}
	switch path.Ext(p) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// ReadDir reads the configuration under dir: every Supported file in it
// and its subdirectories. Symbolic links to files are followed, which is
// how Kubernetes mounts a ConfigMap.
func ReadDir(dir string) (Files, error) {
	files := Files{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !Supported(rel) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			fi, err := os.Stat(p)
			if err != nil || !fi.Mode().IsRegular() {
				return nil // a dangling link or a link to a directory
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[rel] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("liveconfig: read %s: %w", dir, unwrapPath(err))
	}
	return files, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// Player is who a configuration is resolved for. ID comes from the
// session; the attributes are what targeting matches on.
type Player struct {
	ID         string
	Region     string
	Device     string
	Platform   string
	AppVersion string
	Cohorts    []string
}

// Kind tells experiments from gray releases.
type Kind int

// Kinds of assignment.
const (
	KindExperiment Kind = iota + 1
	KindRelease
)

func (k Kind) String() string {
	switch k {
	case KindExperiment:
		return "experiment"
	case KindRelease:
		return "release"
	}
	return "unknown"
}

// Assignment is one experiment or release a player is in.
type Assignment struct {
	ID      string
	Variant string
	Kind    Kind
	Layer   string
}

// Problem is one thing wrong with a configuration: the file, the place in
// it (a JSON pointer, empty for the whole file) and why.
type Problem struct {
	File   string
	Path   string
	Reason string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.File + ": " + p.Reason
	}
	return p.File + ": " + p.Path + ": " + p.Reason
}

// InvalidError refuses a configuration; it lists every problem found.
type InvalidError struct {
	Problems []Problem
}

// Error is one line: the first problem and how many more there are.
func (e *InvalidError) Error() string {
	if len(e.Problems) == 0 {
		return "invalid configuration"
	}
	msg := e.Problems[0].String()
	if n := len(e.Problems) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	return msg
}
