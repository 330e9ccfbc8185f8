package chat

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// A history cursor is the id of the next (older) message to read, in an
// opaque, versioned form: base64url of a version byte and a uvarint.
const cursorVersion = 1

// ErrInvalidCursor is returned for a cursor History did not hand out.
var ErrInvalidCursor = errors.New("chat: invalid cursor")

// maxCursorLen bounds the text decoded: a version byte and a 10-byte
// uvarint are 15 base64 characters.
const maxCursorLen = 16

func encodeCursor(next uint64) string {
	var b [1 + binary.MaxVarintLen64]byte
	b[0] = cursorVersion
	n := binary.PutUvarint(b[1:], next)
	return base64.RawURLEncoding.EncodeToString(b[:1+n])
}

// decodeCursor reads a cursor; it never panics and accepts exactly what
// encodeCursor produces.
func decodeCursor(s string) (uint64, error) {
	if len(s) == 0 || len(s) > maxCursorLen {
		return 0, fmt.Errorf("%w: wrong length", ErrInvalidCursor)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return 0, fmt.Errorf("%w: not base64url", ErrInvalidCursor)
	}
	if len(b) < 2 || b[0] != cursorVersion {
		return 0, fmt.Errorf("%w: unknown version", ErrInvalidCursor)
	}
	seq, n := binary.Uvarint(b[1:])
	if n <= 0 || 1+n != len(b) || seq == 0 {
		return 0, fmt.Errorf("%w: bad position", ErrInvalidCursor)
	}
	if encodeCursor(seq) != s {
		return 0, fmt.Errorf("%w: not in canonical form", ErrInvalidCursor)
	}
	return seq, nil
}
