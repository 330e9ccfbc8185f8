package room

import (
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rooms         *prometheus.GaugeVec
	players       prometheus.Gauge
	joins         *prometheus.CounterVec
	held          prometheus.Counter
	inputsDropped *prometheus.CounterVec
	relayed       prometheus.Counter
	frames        prometheus.Counter
	slowConsumers *prometheus.CounterVec
	stateDropped  prometheus.Counter
	tickSeconds   prometheus.Histogram
	tickOverruns  prometheus.Counter
	logicPanics   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rooms: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rally_room_rooms", Help: "Open rooms by kind.",
		}, []string{"kind"}),
		players: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rally_room_players", Help: "Seats held in all rooms, connected or awaiting reconnect.",
		}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_room_joins_total", Help: "Join attempts by result (ok, full, rejected).",
		}, []string{"result"}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_room_seats_held_total", Help: "Seats held for a reconnect after a dropped connection.",
		}),
		inputsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_room_inputs_dropped_total", Help: "Inputs dropped by a full per-player input queue, by policy.",
		}, []string{"policy"}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_room_relayed_messages_total", Help: "Messages forwarded in relayed rooms (each once, whatever the fan-out).",
		}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_room_state_frames_total", Help: "State frames queued to players of authoritative rooms.",
		}),
		slowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rally_room_slow_consumers_total",
			Help: "Players disconnected because their send queue was full, by what could not be delivered: data, presence, message, room_closed, state_backlog.",
		}, []string{"kind"}),
		stateDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_room_state_frames_dropped_total",
			Help: "State frames not queued because a player's send queue was full; the next frame carries the changes since the player's last acknowledged tick.",
		}),
		tickSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rally_room_tick_seconds", Help: "Duration of one authoritative tick: inputs, logic, state frames.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2.5, 10),
		}),
		tickOverruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_room_tick_overruns_total", Help: "Ticks that took longer than the tick period.",
		}),
		logicPanics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rally_room_logic_panics_total", Help: "Panics in room logic; each closes its room.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.rooms, m.players, m.joins, m.held, m.inputsDropped, m.relayed, m.frames,
			m.slowConsumers, m.stateDropped, m.tickSeconds, m.tickOverruns, m.logicPanics)
	}
	return m
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
