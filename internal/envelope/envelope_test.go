package envelope

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
)

func mustMarshal(t testing.TB, env *rtv1.Envelope) []byte {
	t.Helper()
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeFastMatchesGeneratedCode(t *testing.T) {
	send := &rtv1.Envelope{Cid: 7, Message: &rtv1.Envelope_SendData{SendData: &rtv1.SendData{
		RoomId: "r1", Op: 3, Payload: []byte{1, 2, 3}, ToUsers: []string{"a", "b"},
	}}}
	var f Fast
	if err := DecodeFast(mustMarshal(t, send), &f); err != nil {
		t.Fatal(err)
	}
	if f.Kind != KindSendData || f.CID != 7 || string(f.RoomID) != "r1" || f.Op != 3 ||
		!bytes.Equal(f.Payload, []byte{1, 2, 3}) || len(f.ToUsers) != 2 || string(f.ToUsers[1]) != "b" {
		t.Fatalf("%+v", f)
	}

	ack := &rtv1.Envelope{Message: &rtv1.Envelope_AckState{AckState: &rtv1.AckState{RoomId: "r2", Tick: 99}}}
	if err := DecodeFast(mustMarshal(t, ack), &f); err != nil {
		t.Fatal(err)
	}
	if f.Kind != KindAckState || string(f.RoomID) != "r2" || f.Tick != 99 || f.CID != 0 {
		t.Fatalf("%+v", f)
	}

	join := &rtv1.Envelope{Cid: 4, Message: &rtv1.Envelope_JoinRoom{JoinRoom: &rtv1.JoinRoom{RoomId: "x"}}}
	if err := DecodeFast(mustMarshal(t, join), &f); err != nil {
		t.Fatal(err)
	}
	if f.Kind != KindOther || f.CID != 4 {
		t.Fatalf("%+v", f)
	}
}

func TestDecodeFastRejectsGarbage(t *testing.T) {
	var f Fast
	for _, b := range [][]byte{{0xff}, {0x72, 0x05, 0x01}, {0x08}, {0x72, 0x02, 0x0a, 0x09}} {
		if err := DecodeFast(b, &f); err == nil {
			t.Errorf("% x decoded", b)
		}
	}
}

func TestEncodersMatchGeneratedCode(t *testing.T) {
	data := &rtv1.Envelope{Message: &rtv1.Envelope_Data{Data: &rtv1.Data{RoomId: "room", FromUser: "u", Op: 9, Payload: []byte("hi")}}}
	if got, want := AppendData(nil, "room", "u", 9, []byte("hi")), mustMarshal(t, data); !bytes.Equal(got, want) {
		t.Fatalf("Data:\n got % x\nwant % x", got, want)
	}
	frame := &rtv1.Envelope{Message: &rtv1.Envelope_StateFrame{StateFrame: &rtv1.StateFrame{RoomId: "room", Tick: 300, BaseTick: 298, Data: []byte{5, 6},
		Messages: []*rtv1.Data{{Op: 1, Payload: []byte("a")}, {Op: 2}}}}}
	msgs := AppendFrameMessage(AppendFrameMessage(nil, 1, []byte("a")), 2, nil)
	got := append(append(StateFrameHeader(nil, "room", 300, 298, 2, len(msgs)), 5, 6), msgs...)
	if want := mustMarshal(t, frame); !bytes.Equal(got, want) {
		t.Fatalf("StateFrame:\n got % x\nwant % x", got, want)
	}
	errEnv := &rtv1.Envelope{Cid: 3, Message: &rtv1.Envelope_Error{Error: &rtv1.Error{Code: rtv1.Error_CODE_RATE_LIMITED, Message: "slow down"}}}
	if got, want := AppendError(nil, 3, rtv1.Error_CODE_RATE_LIMITED, "slow down"), mustMarshal(t, errEnv); !bytes.Equal(got, want) {
		t.Fatalf("Error:\n got % x\nwant % x", got, want)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	bin := AppendData(nil, "room", "u", 1, []byte("x"))
	js, err := ToJSON(nil, bin)
	if err != nil {
		t.Fatal(err)
	}
	var env rtv1.Envelope
	if err := Full(js, true, &env); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	if env.GetData().GetRoomId() != "room" || string(env.GetData().GetPayload()) != "x" {
		t.Fatalf("%s", js)
	}
}

func TestHotPathAllocatesNothing(t *testing.T) {
	in := mustMarshal(t, &rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_SendData{SendData: &rtv1.SendData{RoomId: "r1", Op: 1, Payload: make([]byte, 128)}}})
	var f Fast
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := DecodeFast(in, &f); err != nil {
			t.Fatal(err)
		}
		buf = AppendData(buf[:0], "r1", "user", f.Op, f.Payload)
		buf = StateFrameHeader(buf[:0], "r1", 10, 9, 40, 0)
		buf = AppendFrameMessage(buf, 1, f.Payload)
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per message", allocs)
	}
}

func BenchmarkDecodeFastSendData(b *testing.B) {
	in := mustMarshal(b, &rtv1.Envelope{Cid: 1, Message: &rtv1.Envelope_SendData{SendData: &rtv1.SendData{RoomId: "r1", Op: 1, Payload: make([]byte, 128)}}})
	var f Fast
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := DecodeFast(in, &f); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(AppendData(nil, "r", "u", 1, []byte("p")))
	f.Add(AppendError(nil, 1, rtv1.Error_CODE_MALFORMED, "x"))
	for _, env := range []*rtv1.Envelope{
		{Cid: 1, Message: &rtv1.Envelope_SendData{SendData: &rtv1.SendData{RoomId: "r1", Op: 2, Payload: []byte{1}, ToUsers: []string{"a"}}}},
		{Cid: 2, Message: &rtv1.Envelope_AckState{AckState: &rtv1.AckState{RoomId: "r1", Tick: 5}}},
		{Cid: 3, Message: &rtv1.Envelope_JoinRoom{JoinRoom: &rtv1.JoinRoom{Labels: map[string]string{"mode": "duel"}}}},
	} {
		b, _ := proto.Marshal(env)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast Fast
		fastErr := DecodeFast(b, &fast)
		var env rtv1.Envelope
		fullErr := Full(b, false, &env)
		_ = Full(b, true, &rtv1.Envelope{})
		// Where both decoders accept a SendData they must agree.
		if fastErr == nil && fullErr == nil && fast.Kind == KindSendData {
			sd := env.GetSendData()
			if sd == nil {
				return // e.g. an unknown field made the fast path defer
			}
			if string(fast.RoomID) != sd.RoomId || fast.Op != sd.Op || !bytes.Equal(fast.Payload, sd.Payload) || fast.CID != env.Cid {
				t.Fatalf("fast %+v vs full %v", fast, &env)
			}
		}
	})
}
