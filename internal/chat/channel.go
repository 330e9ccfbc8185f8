package chat

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind is what a channel is attached to.
type Kind uint8

// The channel kinds.
const (
	Room   Kind = iota + 1 // a Rally room; its members are the room's players
	Group                  // a named channel anyone may join
	Direct                 // two players
)

func (k Kind) String() string {
	switch k {
	case Room:
		return "room"
	case Group:
		return "group"
	case Direct:
		return "direct"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

func kindOf(s string) (Kind, bool) {
	switch s {
	case "room":
		return Room, true
	case "group":
		return Group, true
	case "direct":
		return Direct, true
	}
	return 0, false
}

// Channel names one channel. Build it with RoomChannel, GroupChannel,
// DirectChannel or ParseChannelID; the zero Channel is not valid.
type Channel struct {
	Kind Kind
	// Name is the room id or the group name; for a direct channel, the
	// lower of the two user ids.
	Name string
	// Peer is the higher user id of a direct channel; empty otherwise.
	Peer string
}

// Limits of names, in bytes.
const (
	maxGroupName = 64
	maxID        = 128
)

// ErrInvalidChannel wraps every problem with a channel id or name.
var ErrInvalidChannel = errors.New("chat: invalid channel")

// checkName accepts 1-max ASCII letters, digits, '-' and '_': safe as a
// NATS subject token and a key of the members bucket, and unambiguous in a
// channel id.
func checkName(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidChannel, what)
	}
	if len(s) > max {
		return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrInvalidChannel, what, len(s), max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %s %q may hold only letters, digits, '-' and '_'", ErrInvalidChannel, what, s)
		}
	}
	return nil
}

// RoomChannel is the channel of a Rally room.
func RoomChannel(roomID string) (Channel, error) {
	if err := checkName("room id", roomID, maxID); err != nil {
		return Channel{}, err
	}
	return Channel{Kind: Room, Name: roomID}, nil
}

// GroupChannel is a named group channel.
func GroupChannel(name string) (Channel, error) {
	if err := checkName("group name", name, maxGroupName); err != nil {
		return Channel{}, err
	}
	return Channel{Kind: Group, Name: name}, nil
}

// DirectChannel is the channel between two distinct players; the order of
// the arguments does not matter.
func DirectChannel(a, b string) (Channel, error) {
	if err := checkName("user id", a, maxID); err != nil {
		return Channel{}, err
	}
	if err := checkName("user id", b, maxID); err != nil {
		return Channel{}, err
	}
	if a == b {
		return Channel{}, fmt.Errorf("%w: a direct channel needs two different players", ErrInvalidChannel)
	}
	if a > b {
		a, b = b, a
	}
	return Channel{Kind: Direct, Name: a, Peer: b}, nil
}

// ID is the channel's public id: "room:<id>", "group:<name>" or
// "direct:<user>:<user>".
func (c Channel) ID() string {
	if c.Kind == Direct {
		return "direct:" + c.Name + ":" + c.Peer
	}
	return c.Kind.String() + ":" + c.Name
}

func (c Channel) String() string { return c.ID() }

// ParseChannelID reads a public channel id. It never panics on any input.
func ParseChannelID(id string) (Channel, error) {
	if len(id) > len("direct:")+2*maxID+1 {
		return Channel{}, fmt.Errorf("%w: channel id is %d bytes long", ErrInvalidChannel, len(id))
	}
	kind, rest, ok := strings.Cut(id, ":")
	if !ok {
		return Channel{}, fmt.Errorf("%w: %q is not room:<id>, group:<name> or direct:<user>:<user>", ErrInvalidChannel, id)
	}
	switch kind {
	case "room":
		return RoomChannel(rest)
	case "group":
		return GroupChannel(rest)
	case "direct":
		a, b, ok := strings.Cut(rest, ":")
		if !ok {
			return Channel{}, fmt.Errorf("%w: a direct channel id is direct:<user>:<user>", ErrInvalidChannel)
		}
		ch, err := DirectChannel(a, b)
		if err != nil {
			return Channel{}, err
		}
		if ch.Name != a {
			// One spelling per channel: ids are compared as strings.
			return Channel{}, fmt.Errorf("%w: the user ids of a direct channel id go in sorted order (%s)", ErrInvalidChannel, ch.ID())
		}
		return ch, nil
	}
	return Channel{}, fmt.Errorf("%w: unknown channel kind %q (room, group or direct)", ErrInvalidChannel, kind)
}

// Has reports whether userID is one of a direct channel's two players.
func (c Channel) Has(userID string) bool {
	return c.Kind == Direct && (c.Name == userID || c.Peer == userID)
}

// Other returns the other player of a direct channel.
func (c Channel) Other(userID string) string {
	if c.Name == userID {
		return c.Peer
	}
	return c.Name
}

// token is the channel as one subject token (and key token). '=' cannot
// occur in a name, so the two users of a direct channel stay apart.
func (c Channel) token() string {
	if c.Kind == Direct {
		return c.Name + "=" + c.Peer
	}
	return c.Name
}

func channelFromTokens(kind, token string) (Channel, error) {
	k, ok := kindOf(kind)
	if !ok {
		return Channel{}, fmt.Errorf("%w: unknown channel kind %q", ErrInvalidChannel, kind)
	}
	switch k {
	case Room:
		return RoomChannel(token)
	case Group:
		return GroupChannel(token)
	}
	a, b, ok := strings.Cut(token, "=")
	if !ok {
		return Channel{}, fmt.Errorf("%w: direct token %q", ErrInvalidChannel, token)
	}
	ch, err := DirectChannel(a, b)
	if err == nil && ch.Name != a {
		err = fmt.Errorf("%w: direct token %q not in sorted order", ErrInvalidChannel, token)
	}
	return ch, err
}

// Subjects. Everything lives under SubjectPrefix:
//
//	rally.chat.<kind>.<channel>.msg            messages, each pointing at the previous one
//	rally.chat.<kind>.<channel>.rev.<msg id>   edits and deletes of one message
//	rally.chat.<kind>.<channel>.presence       joins and leaves
const SubjectPrefix = "rally.chat."

const (
	suffixMsg      = "msg"
	suffixRev      = "rev"
	suffixPresence = "presence"
)

func (c Channel) subject(suffix string) string {
	return SubjectPrefix + c.Kind.String() + "." + c.token() + "." + suffix
}

func (c Channel) msgSubject() string      { return c.subject(suffixMsg) }
func (c Channel) presenceSubject() string { return c.subject(suffixPresence) }
func (c Channel) revSubject(id uint64) string {
	return c.subject(suffixRev + "." + strconv.FormatUint(id, 10))
}

// subjectRef is a parsed chat subject.
type subjectRef struct {
	ch     Channel
	suffix string // msg, rev or presence
	target uint64 // the message a rev subject revises
}

// parseSubject reads a chat subject. Anything with access to NATS can
// publish under the prefix, so it checks every token and never panics.
func parseSubject(subj string) (subjectRef, error) {
	rest, ok := strings.CutPrefix(subj, SubjectPrefix)
	if !ok {
		return subjectRef{}, fmt.Errorf("chat: subject %q is not under %s", subj, SubjectPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) < 3 {
		return subjectRef{}, fmt.Errorf("chat: subject %q has too few tokens", subj)
	}
	ch, err := channelFromTokens(parts[0], parts[1])
	if err != nil {
		return subjectRef{}, err
	}
	ref := subjectRef{ch: ch, suffix: parts[2]}
	switch {
	case len(parts) == 3 && (ref.suffix == suffixMsg || ref.suffix == suffixPresence):
		return ref, nil
	case len(parts) == 4 && ref.suffix == suffixRev:
		n, err := strconv.ParseUint(parts[3], 10, 64)
		if err != nil || n == 0 {
			return subjectRef{}, fmt.Errorf("chat: subject %q: bad message id", subj)
		}
		ref.target = n
		return ref, nil
	}
	return subjectRef{}, fmt.Errorf("chat: subject %q is not a chat event", subj)
}

// memberKey is the members bucket's key for one user in one channel:
// <user>.<kind>.<channel>, so both "channels of a user" (<user>.>) and
// "members of a channel" (*.<kind>.<channel>) are one filter.
func memberKey(userID string, c Channel) string {
	return userID + "." + c.Kind.String() + "." + c.token()
}

// parseMemberKey is memberKey backwards.
func parseMemberKey(key string) (userID string, c Channel, err error) {
	parts := strings.Split(key, ".")
	if len(parts) != 3 {
		return "", Channel{}, fmt.Errorf("chat: member key %q", key)
	}
	if err := checkName("user id", parts[0], maxID); err != nil {
		return "", Channel{}, err
	}
	c, err = channelFromTokens(parts[1], parts[2])
	return parts[0], c, err
}
