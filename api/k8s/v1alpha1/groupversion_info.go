// Package v1alpha1 is the game.rally.dev/v1alpha1 API: the GameServerSet
// resource that rally-operator turns into a fleet of game-server pods, and
// the labels and annotations those pods carry.
//
// +kubebuilder:object:generate=true
// +groupName=game.rally.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of this package.
	GroupVersion = schema.GroupVersion{Group: "game.rally.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
