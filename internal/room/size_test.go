package room

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
	"github.com/rallyhq/rally/internal/statesync"
)

// movers is a Logic whose n entities all move 0.25 units in x and y each
// tick (5 units/s at 20 Hz), the case Colyseus publishes sizes for.
type movers struct {
	n    int
	tick int
}

func (m *movers) Init(h *Handle, _ []byte) (Settings, error) {
	for i := range m.n {
		h.SetEntity(uint32(i+1), float64(i), float64(i))
	}
	return Settings{Schema: statesync.Schema{{Name: "x", Quantum: 0.01}, {Name: "y", Quantum: 0.01}}}, nil
}
func (m *movers) JoinAttempt(*Handle, Player, []byte) (bool, string) { return true, "" }
func (m *movers) Join(*Handle, Player)                               {}
func (m *movers) Leave(*Handle, Player, string)                      {}
func (m *movers) Terminate(*Handle, string)                          {}
func (m *movers) Signal(*Handle, []byte) ([]byte, error)             { return nil, nil }
func (m *movers) Tick(h *Handle, _ uint32, _ []Input) {
	m.tick++
	for i := range m.n {
		v := float64(i) + 0.25*float64(m.tick)
		h.SetEntity(uint32(i+1), v, v)
	}
}

// TestStateFrameSizes measures whole StateFrame envelopes (what goes on the
// wire as one WebSocket message) for one and for 100 moving entities.
func TestStateFrameSizes(t *testing.T) {
	for _, n := range []int{1, 100} {
		m, _ := newTestManager(Config{})
		if err := m.handlers.Register("movers", func() Logic { return &movers{n: n} }); err != nil {
			t.Fatal(err)
		}
		c := newRecorder()
		j, err := m.Create(context.Background(), Player{UserID: "u"}, c, &rtv1.CreateRoom{Handler: "movers", TickRate: 100})
		if err != nil {
			t.Fatal(err)
		}
		r := m.Get([]byte(j.GetRoom().GetId()))
		first := c.waitFor(t, "snapshot", func(e *rtv1.Envelope) bool { return e.GetStateFrame() != nil })
		r.Ack("u", first.GetStateFrame().GetTick())
		delta := c.waitFor(t, "delta", func(e *rtv1.Envelope) bool {
			f := e.GetStateFrame()
			return f != nil && f.GetBaseTick() != 0 && f.GetTick() == f.GetBaseTick()+1
		})
		wire, _ := proto.Marshal(delta)
		data := len(delta.GetStateFrame().GetData())
		t.Logf("%3d entities moving: state data %d B, whole message %d B (room id %d B)", n, data, len(wire), len(r.ID()))
		if n == 1 && data > 9 || n == 100 && data >= 668 {
			t.Errorf("%d entities: %d B of state data", n, data)
		}
		_ = m.Close(context.Background())
	}
}
