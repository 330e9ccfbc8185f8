package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/sdk/go/rally"
)

// A client that stops reading its socket (a frozen app) stops answering
// pings. Its writer on the server is blocked behind tens of megabytes the
// client never reads, yet the server closes it once a ping goes
// unanswered for realtime.pong_timeout, and counts why.
func TestClientThatStopsReadingIsClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig(t)
	cfg.Realtime.PingInterval, cfg.Realtime.PongTimeout = 500*time.Millisecond, 500*time.Millisecond
	// Neither a full send queue nor the closing write's timeout may be what
	// ends the socket: only the missed pong.
	cfg.Realtime.SendQueue, cfg.Realtime.WriteTimeout = 1<<16, 10*time.Minute
	cfg.Realtime.MaxMsgsPerSec, cfg.Realtime.MsgBurst = 100_000, 100_000
	s := startServer(t, cfg)
	defer shutdown(t, s)

	peer := player(t, s, "pumper", rally.Options{})
	j, err := peer.CreateRoom(ctx, &rtv1.CreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	roomID := j.GetRoom().GetId()

	// The frozen client: a tiny receive buffer, one read (its join), then
	// nothing: not even the pongs its reader would send.
	sess, err := rally.AuthenticateDevice(ctx, "http://"+s.Addrs().HTTP, "device-frozen-0123456789", "frozen", true)
	if err != nil {
		t.Fatal(err)
	}
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	u := url.URL{Scheme: "ws", Host: s.Addrs().HTTP, Path: "/ws", RawQuery: url.Values{"token": {sess.Token}}.Encode()}
	ws, _, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	join, _ := proto.Marshal(&rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_JoinRoom{JoinRoom: &rtv1.JoinRoom{RoomId: roomID}}})
	if err := ws.Write(ctx, websocket.MessageBinary, join); err != nil {
		t.Fatal(err)
	}
	_, b, err := ws.Read(ctx)
	var joined rtv1.Envelope
	if err != nil || proto.Unmarshal(b, &joined) != nil || joined.GetRoomJoined() == nil {
		t.Fatalf("frozen client's join: %v %v", &joined, err)
	}
	stopped := time.Now()
	connected := metricValue(t, s, "rally_realtime_connections", "", "")

	// Far more than the socket buffers hold: the server's writer for the
	// frozen client blocks.
	payload := make([]byte, 60<<10)
	for sent := 0; sent < 32<<20; sent += len(payload) {
		if err := peer.Send(roomID, 1, payload); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the frozen client closed", func() (bool, string) {
		n := metricValue(t, s, "rally_realtime_connections", "", "")
		return n == connected-1, fmt.Sprintf("connections %v of %v", n, connected)
	})
	t.Logf("closed %v after the client stopped reading (bound: ping_interval + pong_timeout = %v)",
		time.Since(stopped).Round(time.Millisecond), cfg.Realtime.PingInterval+cfg.Realtime.PongTimeout)
	if got := metricValue(t, s, "rally_realtime_rejections_total", "reason", "pong_timeout"); got != 1 {
		t.Fatalf("pong timeouts counted: %v", got)
	}
	// The pumping peer is still there and served.
	if _, err := peer.Ping(ctx); err != nil {
		t.Fatalf("the peer after the frozen client went: %v", err)
	}
}
