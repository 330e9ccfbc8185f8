package room

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strconv"

	"github.com/rallyhq/rally/internal/statesync"
)

// ArenaHandler is the name of the built-in example room.
const ArenaHandler = "arena"

// Arena op codes.
const (
	// ArenaOpMove carries a direction: two little-endian int16 in
	// [-1000, 1000] (thousandths of full speed). Later inputs in a tick win.
	ArenaOpMove = 1
)

// Arena field order in the state schema.
const (
	ArenaX = iota
	ArenaY
)

// Arena is the example authoritative room: a square top-down arena where
// each player is an entity that moves in the direction it last asked for,
// integrated by the server every tick. Tests, the benchmark and the docs
// use it.
type Arena struct {
	Size    float64 // side of the square, world units
	Speed   float64 // units per second at full input
	players map[string]*arenaPlayer
}

type arenaPlayer struct {
	entity     uint32
	x, y       float64
	dirX, dirY float64
}

// NewArena returns an Arena with default dimensions.
func NewArena() Logic { return &Arena{Size: 100, Speed: 5} }

// Init implements Logic.
func (a *Arena) Init(h *Handle, _ []byte) (Settings, error) {
	a.players = map[string]*arenaPlayer{}
	q := h.PositionQuantum()
	return Settings{
		Schema: statesync.Schema{{Name: "x", Quantum: q}, {Name: "y", Quantum: q}},
		Labels: map[string]string{"game": "arena"},
	}, nil
}

// JoinAttempt implements Logic.
func (a *Arena) JoinAttempt(_ *Handle, _ Player, metadata []byte) (bool, string) {
	if string(metadata) == "spectator-only" {
		return false, "arena has no spectator seats"
	}
	return true, ""
}

// Join implements Logic: the player spawns at a deterministic spot.
func (a *Arena) Join(h *Handle, p Player) {
	id, _ := h.EntityID(p.UserID)
	ap := &arenaPlayer{entity: id, x: float64(id%10) * a.Size / 10, y: float64(id/10%10) * a.Size / 10}
	a.players[p.UserID] = ap
	h.SetEntity(ap.entity, ap.x, ap.y)
}

// Leave implements Logic.
func (a *Arena) Leave(h *Handle, p Player, _ string) {
	if ap, ok := a.players[p.UserID]; ok {
		h.RemoveEntity(ap.entity)
		delete(a.players, p.UserID)
	}
}

// Tick implements Logic: apply the newest direction per player, then move
// everyone.
func (a *Arena) Tick(h *Handle, _ uint32, inputs []Input) {
	for _, in := range inputs {
		ap, ok := a.players[in.UserID]
		if !ok || in.Op != ArenaOpMove {
			continue
		}
		dx, dy, err := DecodeArenaMove(in.Payload)
		if err != nil {
			continue // bad input is ignored, not fatal
		}
		ap.dirX, ap.dirY = dx, dy
	}
	dt := 1 / float64(h.TickRate())
	for _, ap := range a.players {
		if ap.dirX == 0 && ap.dirY == 0 {
			continue
		}
		ap.x = clamp(ap.x+ap.dirX*a.Speed*dt, 0, a.Size)
		ap.y = clamp(ap.y+ap.dirY*a.Speed*dt, 0, a.Size)
		h.SetEntity(ap.entity, ap.x, ap.y)
	}
}

// Terminate implements Logic.
func (a *Arena) Terminate(*Handle, string) {}

// Signal implements Logic: it answers with every player's position as
// JSON, {"<entity id>": [x, y]}, for operators and tests.
func (a *Arena) Signal(_ *Handle, _ []byte) ([]byte, error) {
	out := make(map[string][2]float64, len(a.players))
	for _, ap := range a.players {
		out[strconv.FormatUint(uint64(ap.entity), 10)] = [2]float64{ap.x, ap.y}
	}
	return json.Marshal(out)
}

// EncodeArenaMove encodes a direction for ArenaOpMove.
func EncodeArenaMove(dst []byte, dx, dy float64) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(int16(clamp(dx, -1, 1)*1000)))
	return binary.LittleEndian.AppendUint16(dst, uint16(int16(clamp(dy, -1, 1)*1000)))
}

// DecodeArenaMove decodes an ArenaOpMove payload; payloads may be longer
// (benchmarks pad them), and the direction is normalised to length ≤ 1.
func DecodeArenaMove(b []byte) (dx, dy float64, err error) {
	if len(b) < 4 {
		return 0, 0, errors.New("arena: move needs 4 bytes")
	}
	dx = float64(int16(binary.LittleEndian.Uint16(b))) / 1000
	dy = float64(int16(binary.LittleEndian.Uint16(b[2:]))) / 1000
	if n := math.Hypot(dx, dy); n > 1 {
		dx, dy = dx/n, dy/n
	}
	return dx, dy, nil
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }
