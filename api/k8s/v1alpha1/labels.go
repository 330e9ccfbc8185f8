package v1alpha1

// Labels and annotations on game-server pods. The state of each game server
// lives on its pod, so it survives an operator restart and every writer (the
// controller, the SDK, the allocator) sees the same truth through the API
// server.
const (
	// LabelSet names the owning GameServerSet on every game-server pod.
	LabelSet = "game.rally.dev/set"
	// LabelState holds the pod's GameServerState.
	LabelState = "game.rally.dev/state"
	// LabelGameVersion and LabelTemplateHash are what the rolling update
	// compares against the set's spec.
	LabelGameVersion  = "game.rally.dev/game-version"
	LabelTemplateHash = "game.rally.dev/template-hash"

	// AnnotationHealth is the RFC3339Nano time of the last SDK health ping.
	AnnotationHealth = "game.rally.dev/last-health"
	// AnnotationAllocation is the JSON metadata stamped by an allocation
	// (match id, players, ...); AnnotationAllocatedAt is when it happened.
	AnnotationAllocation  = "game.rally.dev/allocation"
	AnnotationAllocatedAt = "game.rally.dev/allocated-at"

	// LabelUserPrefix prefixes the labels a game server sets on itself
	// through the SDK's SetLabel.
	LabelUserPrefix = "sdk.game.rally.dev/"
)

// GameServerState is the life-cycle state of one game server, kept in the
// LabelState label of its pod.
type GameServerState string

const (
	// StateStarting: the pod exists but its process has not said Ready.
	StateStarting GameServerState = "Starting"
	// StateReady: the process is up and waiting to be allocated.
	StateReady GameServerState = "Ready"
	// StateAllocated: a match runs on it; updates and scale-downs leave it alone.
	StateAllocated GameServerState = "Allocated"
	// StateShutdown: the process is done; the controller deletes and replaces it.
	StateShutdown GameServerState = "Shutdown"
	// StateUnhealthy: health pings stopped; the controller replaces it.
	StateUnhealthy GameServerState = "Unhealthy"
)
