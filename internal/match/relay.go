package match

import (
	"encoding/json"
	"log/slog"
)

// RelaySubject prefixes the NATS subjects ticket updates travel on between
// replicas: rally.match.update.<ticket id>.
const RelaySubject = "rally.match.update."

// Relay publishes every update for all replicas; each replica's Hub gets it
// back through Receive. With a shared pool, the replica that matched a
// ticket is often not the one holding its stream.
type Relay struct {
	Publish func(subject string, data []byte) error
	Log     *slog.Logger
}

// Notify implements the engine's Notify.
func (r Relay) Notify(u Update) {
	b, err := json.Marshal(u)
	if err == nil {
		err = r.Publish(RelaySubject+u.TicketID, b)
	}
	if err != nil && r.Log != nil {
		r.Log.Warn("ticket update not relayed", "ticket", u.TicketID, "kind", u.Kind.String(), "err", err)
	}
}

// Receive hands a relayed update to the local hub.
func Receive(hub *Hub, data []byte) error {
	var u Update
	if err := json.Unmarshal(data, &u); err != nil {
		return err
	}
	hub.Notify(u)
	return nil
}
