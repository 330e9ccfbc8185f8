package roomevents

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// Type names what happened in a room. It is the last subject token of the
// event (custom events add their name after it).
type Type string

// The event types. Custom events are published by the game's own code.
const (
	RoomCreated    Type = "room_created"
	PlayerJoined   Type = "player_joined"
	PlayerLeft     Type = "player_left"
	PlayerDropped  Type = "player_dropped" // connection lost, seat held
	PlayerRejoined Type = "player_rejoined"
	RoomClosed     Type = "room_closed"
	Custom         Type = "custom"
)

// types lists every event type.
var types = []Type{RoomCreated, PlayerJoined, PlayerLeft, PlayerDropped, PlayerRejoined, RoomClosed, Custom}

func (t Type) valid() bool {
	switch t {
	case RoomCreated, PlayerJoined, PlayerLeft, PlayerDropped, PlayerRejoined, RoomClosed, Custom:
		return true
	}
	return false
}

// Event is one room event. It is stored as JSON so that any NATS client (the
// nats CLI, services in other languages) can read the stream.
type Event struct {
	Type   Type   `json:"type"`
	RoomID string `json:"room_id"`
	// Name is the custom event's name; empty for every other type.
	Name     string `json:"name,omitempty"`
	UserID   string `json:"user_id,omitempty"`
	Username string `json:"username,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// At is when it happened; Publish fills in the current time when zero.
	// It is encoded as RFC 3339 with nanoseconds, in UTC.
	At time.Time `json:"at"`
	// Seq is the room's own sequence number, assigned by the caller in the
	// order it publishes; together with RoomID and Type it deduplicates.
	Seq uint64 `json:"seq"`
	// Data is optional JSON: labels, handler, a custom event's payload.
	Data json.RawMessage `json:"data,omitempty"`
}

// Subject prefixes. Everything of the main stream lives under SubjectPrefix,
// dead letters under DeadLetterPrefix with the same remaining tokens.
const (
	SubjectPrefix    = "rally.room."
	DeadLetterPrefix = "rally.deadletter.room."
)

// Subject returns the subject the event is stored under:
// rally.room.<room_id>.<type>, or rally.room.<room_id>.custom.<name>.
// It does not validate; Publish does.
func (e *Event) Subject() string {
	return SubjectPrefix + e.RoomID + "." + e.suffix()
}

func (e *Event) suffix() string {
	if e.Type == Custom {
		return string(Custom) + "." + e.Name
	}
	return string(e.Type)
}

// msgID is the JetStream deduplication id. Custom events carry their name
// too, so two custom events that share a seq are not taken for one.
func (e *Event) msgID() string {
	return e.RoomID + "-" + strconv.FormatUint(e.Seq, 10) + "-" + e.suffix()
}

// RoomSubjects returns the filter matching every event of one room.
func RoomSubjects(roomID string) string { return SubjectPrefix + roomID + ".>" }

// Errors callers can test for with errors.Is.
var (
	// ErrInvalidToken: a room id or custom name cannot be a subject token.
	ErrInvalidToken = errors.New("roomevents: not a valid subject token")
	// ErrInvalidEvent: unknown type, bad field combination or data that is
	// not JSON.
	ErrInvalidEvent = errors.New("roomevents: invalid event")
)

// maxTokenLen keeps subjects and message ids short; room ids and names are
// identifiers, not text.
const maxTokenLen = 128

// checkToken reports whether s can be one NATS subject token. Dots would
// split it, '*' and '>' are wildcards, and whitespace or control characters
// break the protocol line.
func checkToken(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidToken, what)
	}
	if len(s) > maxTokenLen {
		return fmt.Errorf("%w: %s is %d bytes, at most %d allowed", ErrInvalidToken, what, len(s), maxTokenLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidToken, what, s)
	}
	for _, r := range s {
		switch {
		case r == '.', r == '*', r == '>':
			return fmt.Errorf("%w: %s %q contains %q", ErrInvalidToken, what, s, r)
		case unicode.IsSpace(r), unicode.IsControl(r):
			return fmt.Errorf("%w: %s %q contains whitespace or a control character", ErrInvalidToken, what, s)
		}
	}
	return nil
}

// validate checks everything that would make the event unstorable or
// ambiguous, so that Publish fails synchronously rather than the worker
// later.
func (e *Event) validate() error {
	if !e.Type.valid() {
		return fmt.Errorf("%w: unknown type %q", ErrInvalidEvent, e.Type)
	}
	if err := checkToken("room id", e.RoomID); err != nil {
		return err
	}
	if e.Type == Custom {
		if err := checkToken("custom event name", e.Name); err != nil {
			return err
		}
	} else if e.Name != "" {
		return fmt.Errorf("%w: name %q is only for custom events, not %s", ErrInvalidEvent, e.Name, e.Type)
	}
	if len(e.Data) > 0 && !json.Valid(e.Data) {
		return fmt.Errorf("%w: data of %s event in room %s is not valid JSON", ErrInvalidEvent, e.suffix(), e.RoomID)
	}
	return nil
}
