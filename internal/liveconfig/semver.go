package liveconfig

import (
	"fmt"
	"strconv"
	"strings"
)

// version is a semantic version: up to three numbers and an optional
// pre-release tag, which sorts before the release ("1.4.0-beta" < "1.4.0").
type version struct {
	nums [3]int
	pre  string
}

func parseVersion(s string) (version, error) {
	var v version
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i] // build metadata does not order
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.pre = s[i+1:]
		s = s[:i]
		if v.pre == "" {
			return v, fmt.Errorf("empty pre-release in %q", s)
		}
	}
	parts := strings.Split(s, ".")
	if s == "" || len(parts) > 3 {
		return v, fmt.Errorf("%q is not a version like 1.4.2", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("%q is not a version like 1.4.2", s)
		}
		v.nums[i] = n
	}
	return v, nil
}

func (a version) compare(b version) int {
	for i := range a.nums {
		if a.nums[i] != b.nums[i] {
			if a.nums[i] < b.nums[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case a.pre == b.pre:
		return 0
	case a.pre == "":
		return 1
	case b.pre == "":
		return -1
	case a.pre < b.pre:
		return -1
	}
	return 1
}

type comparator struct {
	op string
	v  version
}

func (c comparator) match(v version) bool {
	d := v.compare(c.v)
	switch c.op {
	case ">=":
		return d >= 0
	case ">":
		return d > 0
	case "<=":
		return d <= 0
	case "<":
		return d < 0
	case "!=":
		return d != 0
	}
	return d == 0
}

// versionRange is alternatives ("||") of comparators that must all hold,
// e.g. ">=1.4.0 <2.0.0 || 2.1.3".
type versionRange [][]comparator

func parseRange(s string) (versionRange, error) {
	var r versionRange
	for _, alt := range strings.Split(s, "||") {
		fields := strings.Fields(alt)
		if len(fields) == 0 {
			return nil, fmt.Errorf("empty alternative in %q", s)
		}
		var all []comparator
		for _, f := range fields {
			op := "="
			for _, candidate := range []string{">=", "<=", "!=", ">", "<", "="} {
				if strings.HasPrefix(f, candidate) {
					op, f = candidate, f[len(candidate):]
					break
				}
			}
			v, err := parseVersion(f)
			if err != nil {
				return nil, err
			}
			all = append(all, comparator{op, v})
		}
		r = append(r, all)
	}
	return r, nil
}

func (r versionRange) match(s string) bool {
	v, err := parseVersion(s)
	if err != nil {
		return false // a client that reports no usable version is not targeted
	}
	for _, all := range r {
		ok := true
		for _, c := range all {
			if !c.match(v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
