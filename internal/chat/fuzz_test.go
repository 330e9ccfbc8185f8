package chat

import (
	"testing"
	"time"
)

// Channel ids come from clients: any string parses or fails cleanly, and
// what parses has exactly one spelling.
func FuzzChatParseChannelID(f *testing.F) {
	for _, s := range []string{"group:lobby", "room:abc", "direct:a:b", "direct:b:a", "direct:a:a", "group:",
		":", "", "group:a.b", "room:*", "direct:a", "direct:a:b:c", "group:" + string(make([]byte, 70))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		ch, err := ParseChannelID(id)
		if err != nil {
			return
		}
		if ch.ID() != id {
			t.Fatalf("%q parses to %q", id, ch.ID())
		}
		ref, err := parseSubject(ch.msgSubject())
		if err != nil || ref.ch != ch || ref.suffix != suffixMsg {
			t.Fatalf("subject of %q does not parse back: %v %v", id, ref, err)
		}
		uid := "u1"
		if ch.Kind == Direct {
			uid = ch.Name
		}
		if u, back, err := parseMemberKey(memberKey(uid, ch)); err != nil || back != ch || u != uid {
			t.Fatalf("member key of %q does not parse back: %v %v", id, back, err)
		}
	})
}

// Cursors come back from clients: anything decodes or fails cleanly, and
// only what encodeCursor made decodes.
func FuzzChatDecodeCursor(f *testing.F) {
	for _, seq := range []uint64{1, 127, 128, 1 << 40, 1<<64 - 1} {
		f.Add(encodeCursor(seq))
	}
	for _, s := range []string{"", "AQ", "AQA", "AYAB", "////////////////", "AQ==", "Ag"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seq, err := decodeCursor(s)
		if err != nil {
			return
		}
		if seq == 0 || encodeCursor(seq) != s {
			t.Fatalf("%q decodes to %d, which encodes to %q", s, seq, encodeCursor(seq))
		}
	})
}

// Anything with access to NATS can publish under rally.chat.: the router
// skips what is not a chat event and never panics.
func FuzzChatDispatch(f *testing.F) {
	f.Add("rally.chat.group.lobby.msg", []byte(`{"type":"message","sender":"a","text":"hi","at":"2024-01-01T00:00:00Z"}`))
	f.Add("rally.chat.group.lobby.rev.5", []byte(`{"type":"edit","sender":"a","text":"x","by":"a","at":"2024-01-01T00:00:00Z"}`))
	f.Add("rally.chat.direct.a=b.presence", []byte(`{"type":"join","sender":"a"}`))
	f.Add("rally.chat.direct.b=a.presence", []byte(`{"type":"leave","sender":"a"}`))
	f.Add("rally.chat.room.r.rev.0", []byte(`{"type":"delete"}`))
	f.Add("rally.chat.group.x.msg", []byte(`{"type":"join","sender":"a"}`))
	f.Add("rally.chat.group.x.msg", []byte(`not json`))
	f.Add("rally.chat..", []byte{})
	r := newRouter(nil, newMetrics(nil), quiet, nil)
	sub := newSubscriber("a", nil, 1)
	r.add(sub)
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		r.dispatch(subject, data, 1, time.Now())
		select { // keep the queue free so the subscriber is not dropped
		case <-sub.events:
		default:
		}
		if ref, err := parseSubject(subject); err == nil {
			if ref.ch.subject(ref.suffix) != subject && ref.ch.revSubject(ref.target) != subject {
				t.Fatalf("%q parses to %+v, which is another subject", subject, ref)
			}
		}
	})
}
