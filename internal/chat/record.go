package chat

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// Record types.
const (
	typeMessage = "message"
	typeEdit    = "edit"
	typeDelete  = "delete"
	typeJoin    = "join"
	typeLeave   = "leave"
)

// record is one stored chat event. It is JSON so that any NATS client (the
// nats CLI, services in other languages) can read the stream.
type record struct {
	Type string `json:"type"`
	// Sender wrote the message (message, edit, delete) or joined or left
	// (join, leave); empty for the server.
	Sender   string `json:"sender,omitempty"`
	Username string `json:"username,omitempty"`
	Text     string `json:"text,omitempty"`
	// Prev is the id of the channel's previous message (message only), 0
	// for the first: history walks backwards along it.
	Prev uint64 `json:"prev,omitempty"`
	// Created is when the revised message was sent (edit, delete), so an
	// edit renders the whole message without a second read.
	Created time.Time `json:"created,omitzero"`
	// By did the edit or delete; empty for the server.
	By string    `json:"by,omitempty"`
	At time.Time `json:"at"`
}

// decodeRecord reads a stored event and checks it fits the subject it came
// on; the stream is shared, so it trusts nothing.
func decodeRecord(data []byte, suffix string) (record, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, fmt.Errorf("chat: event is not JSON: %w", err)
	}
	ok := false
	switch suffix {
	case suffixMsg:
		ok = r.Type == typeMessage
	case suffixRev:
		ok = r.Type == typeEdit || r.Type == typeDelete
	case suffixPresence:
		ok = (r.Type == typeJoin || r.Type == typeLeave) && r.Sender != ""
	}
	if !ok {
		return record{}, fmt.Errorf("chat: a %q event on a %s subject", r.Type, suffix)
	}
	if !utf8.ValidString(r.Text) || !utf8.ValidString(r.Username) {
		return record{}, fmt.Errorf("chat: event text is not UTF-8")
	}
	return r, nil
}
