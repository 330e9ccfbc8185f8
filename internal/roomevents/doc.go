// Package roomevents keeps the durable, per-room ordered stream of room
// events on NATS JetStream: it publishes them without stalling room loops,
// dead-letters what cannot be stored, and replays a room's history.
//
// Events are JSON on rally.room.<room_id>.<type> (custom events on
// rally.room.<room_id>.custom.<name>), so any NATS client can read them;
// dead letters keep the same tokens under rally.deadletter.room.
package roomevents
