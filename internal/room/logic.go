package room

import (
	"fmt"
	"sort"
	"sync"

	"github.com/rallyhq/rally/internal/statesync"
)

// Player is one seat holder.
type Player struct {
	UserID    string
	Username  string
	SessionID string
}

// Input is one message a player sent to an authoritative room since the
// previous tick. Payload is valid only during the Tick call.
type Input struct {
	UserID  string
	Op      uint32
	Payload []byte
}

// Settings is what a room's logic chooses in Init.
type Settings struct {
	// Schema of the synchronised entities; empty means no state sync.
	Schema statesync.Schema
	// TickRate in Hz (1-128); 0 keeps what the creator asked for or the
	// server default.
	TickRate int
	// MaxPlayers; 0 keeps the requested or default value.
	MaxPlayers int
	// Labels are merged over the creator's labels.
	Labels map[string]string
}

// Logic is a studio's game code for an authoritative room. A new Logic is
// made for each room by its registered Factory, and all its methods are
// called from the room's own goroutine, one at a time, so it needs no
// locking of its own.
type Logic interface {
	// Init prepares the room; params come from the creating client.
	Init(r *Handle, params []byte) (Settings, error)
	// JoinAttempt accepts or rejects a player, with a reason shown to them.
	JoinAttempt(r *Handle, p Player, metadata []byte) (accept bool, reason string)
	// Join seats an accepted player.
	Join(r *Handle, p Player)
	// Leave removes a player: they left, were kicked, or their reconnect hold
	// expired.
	Leave(r *Handle, p Player, reason string)
	// Tick advances the game by one step with the inputs received since the
	// previous tick, in arrival order.
	Tick(r *Handle, tick uint32, inputs []Input)
	// Terminate is called once when the room closes.
	Terminate(r *Handle, reason string)
	// Signal delivers an out-of-band message from server code (for example
	// matchmaking backfill) and returns a reply.
	Signal(r *Handle, data []byte) ([]byte, error)
}

// Factory makes a Logic for a new room.
type Factory func() Logic

// Registry maps handler names to game logic.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// NewRegistry returns a registry holding the built-in example handlers.
func NewRegistry() *Registry {
	r := &Registry{factories: map[string]Factory{}}
	r.MustRegister(ArenaHandler, NewArena)
	return r
}

// Register adds a handler; names are unique.
func (r *Registry) Register(name string, f Factory) error {
	if name == "" || f == nil {
		return fmt.Errorf("room: handler needs a name and a factory")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.factories[name]; dup {
		return fmt.Errorf("room: handler %q registered twice", name)
	}
	r.factories[name] = f
	return nil
}

// MustRegister is Register for start-up code, where a clash is a bug.
func (r *Registry) MustRegister(name string, f Factory) {
	if err := r.Register(name, f); err != nil {
		panic(err)
	}
}

func (r *Registry) lookup(name string) (Factory, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.factories[name]
	return f, ok
}

// Names lists the registered handlers.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.factories))
	for n := range r.factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
