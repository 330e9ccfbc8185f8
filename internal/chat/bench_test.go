package chat

import (
	"fmt"
	"testing"
	"time"

	chatv1 "github.com/rallyhq/rally/api/proto/rally/chat/v1"
	"github.com/rallyhq/rally/internal/bus"
)

// BenchmarkChatSend stores messages in one group channel, one at a time,
// with a subscriber receiving each: the cost of one chat message end to end
// inside one process (JetStream on the embedded server).
func BenchmarkChatSend(b *testing.B) {
	nb := openBus(b, bus.Options{StoreDir: b.TempDir()})
	defer closeBus(b, nb)
	s := startService(b, nb, Options{MessagesPerSecond: 1e9, MessageBurst: 1 << 30, SubscriberQueue: 1 << 16})
	ctx := ctxT(b)
	a := Player("alice", "")
	ch := mustChannelFn(b)(GroupChannel("bench"))
	if _, err := s.Join(ctx, a, ch); err != nil {
		b.Fatal(err)
	}
	got := make(chan struct{}, 1<<16)
	ready := make(chan struct{})
	go func() {
		_ = s.Subscribe(ctx, a, nil, func(ev *chatv1.Event) error {
			if ev.GetSubscribed() != nil {
				close(ready)
			} else if ev.GetMessage() != nil {
				got <- struct{}{}
			}
			return nil
		})
	}()
	<-ready
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := s.Send(ctx, a, ch, fmt.Sprint("message ", i)); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		<-got
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkChatHistoryPage reads pages of 50 messages backwards through a
// channel of 2,000, one in ten edited.
func BenchmarkChatHistoryPage(b *testing.B) {
	nb := openBus(b, bus.Options{StoreDir: b.TempDir()})
	defer closeBus(b, nb)
	s := startService(b, nb, Options{MessagesPerSecond: 1e9, MessageBurst: 1 << 30})
	ctx := ctxT(b)
	a := Player("alice", "")
	ch := mustChannelFn(b)(GroupChannel("bench"))
	if _, err := s.Join(ctx, a, ch); err != nil {
		b.Fatal(err)
	}
	const n = 2000
	for i := range n {
		m, err := s.Send(ctx, a, ch, fmt.Sprint("message ", i))
		if err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			if _, err := s.Edit(ctx, a, ch, m.GetId(), "edited"); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	cursor := ""
	for range b.N {
		resp, err := s.History(ctx, a, ch, cursor, 50)
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.GetMessages()) != 50 {
			b.Fatalf("page of %d", len(resp.GetMessages()))
		}
		if cursor = resp.GetNextCursor(); cursor == "" {
			cursor = "" // wrapped: start again from the newest page
		}
	}
}
