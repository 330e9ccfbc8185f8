package config

import (
	"strings"
	"testing"
	"time"
)

func TestChatConfigKeys(t *testing.T) {
	c := Default().Chat
	if c.Stream != "RALLY_CHAT" || c.MaxMessageBytes != 4096 || c.MessagesPerSecond != 5 || c.HistoryMaxAge != 720*time.Hour {
		t.Fatalf("chat defaults %+v", c)
	}
	file := writeFile(t, "chat:\n  max_message_bytes: 512\n  messages_per_second: 0.5\n  history_max_age: 0s\n")
	res, err := Load(flags(t, "--config", file), []string{"RALLY_CHAT_MESSAGE_BURST=3"})
	if err != nil {
		t.Fatal(err)
	}
	if c := res.Config.Chat; c.MaxMessageBytes != 512 || c.MessagesPerSecond != 0.5 || c.MessageBurst != 3 || c.HistoryMaxAge != 0 {
		t.Fatalf("loaded %+v", c)
	}
}

func TestChatConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		env  []string
		want string
	}{
		{[]string{"RALLY_CHAT_STREAM=chat.stream"}, "chat.stream"},
		{[]string{"RALLY_CHAT_STREAM=RALLY_ROOM_EVENTS"}, "chat.stream"},
		{[]string{"RALLY_CHAT_MEMBERS_BUCKET="}, "chat.members_bucket"},
		{[]string{"RALLY_CHAT_MAX_MESSAGE_BYTES=0"}, "chat.max_message_bytes: must be within 1-262144"},
		{[]string{"RALLY_CHAT_MAX_MESSAGE_BYTES=1000000"}, "chat.max_message_bytes"},
		{[]string{"RALLY_CHAT_MESSAGES_PER_SECOND=0"}, "chat.messages_per_second: must be positive"},
		{[]string{"RALLY_CHAT_MESSAGE_BURST=0"}, "chat.message_burst"},
		{[]string{"RALLY_CHAT_SUBSCRIBER_QUEUE=0"}, "chat.subscriber_queue"},
		{[]string{"RALLY_CHAT_HISTORY_MAX_AGE=10s"}, "chat.history_max_age: must be 0 (keep forever) or at least 1m"},
		{[]string{"RALLY_CHAT_ROOM_REPLAY=-1h"}, "chat.room_replay"},
	}
	for _, c := range cases {
		_, err := Load(flags(t), c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error naming %q", c.env, err, c.want)
		}
	}
}
