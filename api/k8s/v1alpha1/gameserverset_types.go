package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GameServerSet is a fleet of identical dedicated game servers: replicas
// pods named <set>-<ordinal>, reachable through a headless Service named
// <set>, each moving through Starting, Ready, Allocated and Shutdown as its
// process reports through the game-server SDK. The operator owns the pods
// itself, so updates and scale-downs never touch an Allocated server.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=gss,categories=rally
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Current",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Allocated",type=integer,JSONPath=`.status.allocatedReplicas`
// +kubebuilder:printcolumn:name="Updated",type=integer,JSONPath=`.status.updatedReplicas`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.gameVersion`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter) of at most 50 characters: it names the headless Service and the pods <name>-<ordinal>"
type GameServerSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GameServerSetSpec   `json:"spec"`
	Status GameServerSetStatus `json:"status,omitempty"`
}

// GameServerSetSpec is what the fleet should look like.
type GameServerSetSpec struct {
	// Replicas is the number of game servers wanted. Allocated servers are
	// never removed to reach it: a scale-down below the allocated count
	// waits for those games to end.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// GameVersion labels every pod (game.rally.dev/game-version) and is
	// given to the game server as RALLY_GAME_VERSION. Changing it rolls
	// the fleet, like a change of the template does.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
	// +optional
	GameVersion string `json:"gameVersion,omitempty"`

	// Template is the pod of one game server. The operator adds its labels,
	// the hostname <set>-<ordinal>, the subdomain <set> and a few
	// environment variables (RALLY_GAMESERVER_NAME, RALLY_GAMESERVER_NAMESPACE,
	// RALLY_GAME_VERSION) for the SDK.
	// +kubebuilder:validation:XValidation:rule="has(self.spec) && size(self.spec.containers) > 0",message="spec.template.spec.containers must list at least one container (the game server)"
	// +kubebuilder:validation:XValidation:rule="!has(self.spec) || (!has(self.spec.hostname) && !has(self.spec.subdomain))",message="spec.template.spec.hostname and subdomain must be unset: the operator sets them to <set>-<ordinal> and the headless Service <set>"
	// +kubebuilder:validation:XValidation:rule="!has(self.metadata) || !has(self.metadata.labels) || self.metadata.labels.all(k, !k.startsWith('game.rally.dev/'))",message="spec.template.metadata.labels must not use the game.rally.dev/ prefix: the operator owns those labels"
	Template corev1.PodTemplateSpec `json:"template"`

	// Ports are the game server's ports, published on the headless Service
	// and returned by allocation. Empty means every containerPort of the
	// template's containers.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Ports []GameServerPort `json:"ports,omitempty"`

	// Health says how the operator judges the SDK's health pings.
	// +kubebuilder:default={}
	// +optional
	Health HealthSpec `json:"health,omitempty"`

	// UpdateStrategy says how servers are replaced when gameVersion or the
	// template changes.
	// +kubebuilder:default={}
	// +optional
	UpdateStrategy UpdateStrategy `json:"updateStrategy,omitempty"`

	// ScaleDownPolicy picks which Ready servers go first on a scale-down
	// (servers that are not Ready yet always go before Ready ones, and
	// Allocated ones never): Packed empties the least used nodes first so
	// the cluster autoscaler can remove them; Distributed thins the most
	// used nodes first.
	// +kubebuilder:default=Packed
	// +optional
	ScaleDownPolicy ScaleDownPolicy `json:"scaleDownPolicy,omitempty"`

	// PodManagementPolicy is Parallel (start every missing server at once,
	// within the operator's parallelism limit) or OrderedReady (start one
	// at a time, each after the previous one is Ready), as a StatefulSet.
	// +kubebuilder:default=Parallel
	// +optional
	PodManagementPolicy PodManagementPolicy `json:"podManagementPolicy,omitempty"`
}

// GameServerPort is one port of the game server.
type GameServerPort struct {
	// Name identifies the port in the Service and in allocation answers.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// ContainerPort is the port the game server listens on.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ContainerPort int32 `json:"containerPort"`
	// Protocol is TCP, UDP or SCTP.
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	// +kubebuilder:default=TCP
	// +optional
	Protocol corev1.Protocol `json:"protocol,omitempty"`
}

// HealthSpec configures the SDK health pings.
//
// +kubebuilder:validation:XValidation:rule="(has(self.disabled) && self.disabled) || !has(self.periodSeconds) || !has(self.failureThreshold) || self.periodSeconds * self.failureThreshold <= 3600",message="health.periodSeconds * health.failureThreshold must be at most 3600 seconds"
type HealthSpec struct {
	// Disabled turns health checking off: no server is ever marked
	// Unhealthy for missed pings or a slow start.
	// +kubebuilder:default=false
	// +optional
	Disabled bool `json:"disabled"`
	// PeriodSeconds is how often the SDK pings.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=600
	// +optional
	PeriodSeconds int32 `json:"periodSeconds,omitempty"`
	// FailureThreshold is how many periods may pass without a ping before
	// a Ready or Allocated server that has pinged before is Unhealthy.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	FailureThreshold int32 `json:"failureThreshold,omitempty"`
	// StartupTimeoutSeconds is how long a server may stay Starting before
	// it is Unhealthy and replaced; 0 waits forever.
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	// +optional
	StartupTimeoutSeconds int32 `json:"startupTimeoutSeconds"`
}

// UpdateStrategyType names how servers are replaced.
// +kubebuilder:validation:Enum=RollingUpdate;Recreate
type UpdateStrategyType string

const (
	// RollingUpdate replaces Ready servers a few at a time, waiting for the
	// new ones to be Ready.
	RollingUpdate UpdateStrategyType = "RollingUpdate"
	// Recreate removes every server that is not Allocated at once, then
	// starts the new ones.
	Recreate UpdateStrategyType = "Recreate"
)

// UpdateStrategy says how servers are replaced on a change of gameVersion
// or template. Whatever the strategy, an Allocated server is replaced only
// after its game ends (Shutdown, or back to Ready).
//
// +kubebuilder:validation:XValidation:rule="!has(self.type) || self.type == 'RollingUpdate' || !has(self.rollingUpdate)",message="updateStrategy.rollingUpdate applies only when updateStrategy.type is RollingUpdate"
type UpdateStrategy struct {
	// Type is RollingUpdate or Recreate.
	// +kubebuilder:default=RollingUpdate
	// +optional
	Type UpdateStrategyType `json:"type,omitempty"`
	// RollingUpdate bounds a RollingUpdate.
	// +optional
	RollingUpdate *RollingUpdateSpec `json:"rollingUpdate,omitempty"`
}

// RollingUpdateSpec bounds how many servers a rolling update may take out
// of service or add beyond replicas at a time. Percentages are of replicas;
// maxSurge rounds up, maxUnavailable down; both 0 is refused.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.maxSurge) && has(self.maxUnavailable) && string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",message="updateStrategy.rollingUpdate: maxSurge and maxUnavailable cannot both be 0, or the update could never start"
type RollingUpdateSpec struct {
	// MaxUnavailable is how many of replicas may be not Ready during the
	// update (a number or a percentage). Default 25%.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="maxUnavailable must be a non-negative number or a percentage from 0% to 100%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
	// MaxSurge is how many servers may exist beyond replicas during the
	// update (a number or a percentage). Default 25%.
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",message="maxSurge must be a non-negative number or a percentage from 0% to 100%"
	// +optional
	MaxSurge *intstr.IntOrString `json:"maxSurge,omitempty"`
}

// ScaleDownPolicy names which Ready servers a scale-down removes first.
// +kubebuilder:validation:Enum=Packed;Distributed
type ScaleDownPolicy string

const (
	// Packed removes servers from the least used nodes first.
	Packed ScaleDownPolicy = "Packed"
	// Distributed removes servers from the most used nodes first.
	Distributed ScaleDownPolicy = "Distributed"
)

// PodManagementPolicy names how missing servers are started.
// +kubebuilder:validation:Enum=OrderedReady;Parallel
type PodManagementPolicy string

const (
	// Parallel starts every missing server at once.
	Parallel PodManagementPolicy = "Parallel"
	// OrderedReady starts one server at a time, lowest ordinal first.
	OrderedReady PodManagementPolicy = "OrderedReady"
)

// GameServerSetPhase is the fleet's overall state.
type GameServerSetPhase string

const (
	// PhasePending: nothing has been created yet.
	PhasePending GameServerSetPhase = "Pending"
	// PhaseStarting: not every wanted server is Ready or Allocated yet.
	PhaseStarting GameServerSetPhase = "Starting"
	// PhaseRunning: the wanted count of servers is Ready or Allocated.
	PhaseRunning GameServerSetPhase = "Running"
	// PhaseTerminating: the set is being deleted and waits for its
	// Allocated servers to end their games.
	PhaseTerminating GameServerSetPhase = "Terminating"
	// PhaseFailed: pods cannot be created or keep crashing; the Failed
	// condition says why.
	PhaseFailed GameServerSetPhase = "Failed"
)

// Condition types of a GameServerSet.
const (
	// ConditionReady is True when the wanted count of servers is Ready or
	// Allocated.
	ConditionReady = "Ready"
	// ConditionProgressing is True while servers are being started,
	// replaced or removed; its reason says which.
	ConditionProgressing = "Progressing"
	// ConditionFailed is True when pods cannot be created or crash-loop.
	ConditionFailed = "Failed"
)

// GameServerSetStatus is what the operator last saw.
type GameServerSetStatus struct {
	// Phase is Pending, Starting, Running, Terminating or Failed.
	// +optional
	Phase GameServerSetPhase `json:"phase,omitempty"`
	// Replicas counts the set's servers that are not being deleted.
	// +optional
	Replicas int32 `json:"replicas"`
	// ReadyReplicas counts servers in state Ready whose pod is ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// AllocatedReplicas counts servers in state Allocated.
	// +optional
	AllocatedReplicas int32 `json:"allocatedReplicas"`
	// UpdatedReplicas counts servers of the current gameVersion and template.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas"`
	// UpdateRevision is the template hash new servers are created with
	// (the game.rally.dev/template-hash label).
	// +optional
	UpdateRevision string `json:"updateRevision,omitempty"`
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Selector selects the set's pods, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`
	// Conditions: Ready, Progressing, Failed.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// GameServerSetList is a list of GameServerSets.
//
// +kubebuilder:object:root=true
type GameServerSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GameServerSet `json:"items"`
}

func init() {
	SchemeBuilder.Register(&GameServerSet{}, &GameServerSetList{})
}
