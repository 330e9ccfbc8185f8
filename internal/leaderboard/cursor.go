package leaderboard

import (
	"encoding/base64"
	"encoding/binary"
)

// A cursor names the last record of a page by its key, so the next page
// starts right after it even when records above moved in between, and it
// names its board and period, so a page never continues on another.
//
//	version(1) | zigzag A | zigzag B | seq | len board | board | len period | period
//
// base64url without padding.
const cursorVersion = 1

type cursor struct {
	board, period string
	key           Key
}

func (c cursor) encode() string {
	b := make([]byte, 0, 32+len(c.board)+len(c.period))
	b = append(b, cursorVersion)
	b = binary.AppendVarint(b, c.key.A)
	b = binary.AppendVarint(b, c.key.B)
	b = binary.AppendUvarint(b, c.key.Seq)
	b = binary.AppendUvarint(b, uint64(len(c.board)))
	b = append(b, c.board...)
	b = binary.AppendUvarint(b, uint64(len(c.period)))
	b = append(b, c.period...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses s; any malformed input is an error, never a panic.
func decodeCursor(s string) (cursor, error) {
	bad := invalidf("malformed cursor")
	if len(s) == 0 || len(s) > 512 {
		return cursor{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 || b[0] != cursorVersion {
		return cursor{}, bad
	}
	b = b[1:]
	var c cursor
	var n int
	if c.key.A, n = binary.Varint(b); n <= 0 {
		return cursor{}, bad
	}
	b = b[n:]
	if c.key.B, n = binary.Varint(b); n <= 0 {
		return cursor{}, bad
	}
	b = b[n:]
	if c.key.Seq, n = binary.Uvarint(b); n <= 0 {
		return cursor{}, bad
	}
	b = b[n:]
	str := func() (string, bool) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return "", false
		}
		s := string(b[n : n+int(l)])
		b = b[n+int(l):]
		return s, true
	}
	var ok bool
	if c.board, ok = str(); !ok {
		return cursor{}, bad
	}
	if c.period, ok = str(); !ok || len(b) != 0 {
		return cursor{}, bad
	}
	// The key must be one a record can have, or Redis would be asked for
	// a range it cannot encode.
	if c.key.A > MaxScore || c.key.A < -MaxScore || c.key.B > MaxScore || c.key.B < -MaxScore || c.key.Seq > MaxScore {
		return cursor{}, bad
	}
	if !boardID.MatchString(c.board) || !validPeriodID(c.period) {
		return cursor{}, bad
	}
	return c, nil
}
