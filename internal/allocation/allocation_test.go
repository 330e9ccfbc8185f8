package allocation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gamev1 "github.com/rallyhq/rally/api/k8s/v1alpha1"
	allocationv1 "github.com/rallyhq/rally/api/proto/rally/allocation/v1"
	"github.com/rallyhq/rally/internal/allocation/allocclient"
)

// An allocation marks a Ready server Allocated on the API server, stamps
// the metadata and labels, and answers with its address, IP and ports;
// servers that are not Ready are never handed out, and none is handed out
// twice.
func TestAllocateMarksAReadyServerAllocated(t *testing.T) {
	k := newKube(t)
	ready := k.create(t, 2, server{set: "arena", version: "1.0", ip: "10.0.0.7"})
	k.create(t, 1, server{set: "arena", version: "1.0", state: gamev1.StateStarting})
	r := k.startReplica(t, Options{})
	r.waitReady(t, 2)
	cl := allocclient.NewClient(r.conn, "")
	ctx := context.Background()

	got := map[string]bool{}
	for i := range 2 {
		resp, err := cl.Allocate(ctx, &allocationv1.AllocateRequest{
			Set:      "arena",
			Metadata: map[string]string{"match_id": "m-" + string(rune('a'+i)), "players": "ann,bob"},
			Labels:   map[string]string{"example.com/match": "m-" + string(rune('a'+i))},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got[resp.GetName()] {
			t.Fatalf("%s handed out twice", resp.GetName())
		}
		got[resp.GetName()] = true
		if resp.GetAddress() != resp.GetName()+".arena."+k.ns+".svc" || resp.GetIp() != "10.0.0.7" ||
			resp.GetSet() != "arena" || resp.GetNamespace() != k.ns || resp.GetGameVersion() != "1.0" {
			t.Fatalf("response: %v", resp)
		}
		if len(resp.GetPorts()) != 2 || resp.GetPorts()[0].GetName() != "game" || resp.GetPorts()[0].GetPort() != 7777 ||
			resp.GetPorts()[0].GetProtocol() != "UDP" || resp.GetPorts()[1].GetName() != "tcp-8080" {
			t.Fatalf("ports: %v", resp.GetPorts())
		}
		pod := k.pod(t, resp.GetName())
		if pod.Labels[gamev1.LabelState] != "Allocated" || pod.Labels["example.com/match"] != "m-"+string(rune('a'+i)) {
			t.Fatalf("pod labels after allocation: %v", pod.Labels)
		}
		var meta map[string]string
		if err := json.Unmarshal([]byte(pod.Annotations[gamev1.AnnotationAllocation]), &meta); err != nil || meta["match_id"] != "m-"+string(rune('a'+i)) {
			t.Fatalf("allocation annotation %q: %v", pod.Annotations[gamev1.AnnotationAllocation], err)
		}
		if pod.Annotations[gamev1.AnnotationAllocatedAt] != resp.GetAllocatedAt() {
			t.Fatalf("allocated-at %q, response says %q", pod.Annotations[gamev1.AnnotationAllocatedAt], resp.GetAllocatedAt())
		}
	}
	for _, n := range ready {
		if !got[n] {
			t.Fatalf("Ready server %s not allocated; got %v", n, got)
		}
	}
	_, err := cl.Allocate(ctx, &allocationv1.AllocateRequest{Set: "arena"})
	if !errors.Is(err, ErrNoServer) || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third allocation: %v, want ErrNoServer / RESOURCE_EXHAUSTED", err)
	}
	if v := counter(r.a.m.requests.WithLabelValues("unallocated")); v != 1 {
		t.Fatalf("unallocated counter %v", v)
	}

	// The game ends and the server goes back to Ready (as the SDK does):
	// it can be allocated again.
	back := ready[0]
	pod := k.pod(t, back)
	patch := []byte(`{"metadata":{"labels":{"game.rally.dev/state":"Ready"},"annotations":{"game.rally.dev/allocation":null,"game.rally.dev/allocated-at":null}}}`)
	if _, err := k.cs.CoreV1().Pods(k.ns).Patch(ctx, pod.Name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitIndexed(t, k.ns, back)
	resp, err := cl.Allocate(ctx, &allocationv1.AllocateRequest{})
	if err != nil || resp.GetName() != back {
		t.Fatalf("re-allocation: %v %v", resp, err)
	}
}

// Selectors are tried in order: the first that matches a Ready server
// wins, and the answer says which.
func TestSelectorsInPreferenceOrder(t *testing.T) {
	k := newKube(t)
	k.create(t, 1, server{set: "arena", version: "1.0", labels: map[string]string{"sdk.game.rally.dev/map": "dust"}})
	k.create(t, 1, server{set: "other", version: "2.0"})
	r := k.startReplica(t, Options{})
	r.waitReady(t, 2)
	ctx := context.Background()
	newestFirst := []*allocationv1.Selector{{GameVersion: "2.0"}, {GameVersion: "1.0"}}

	// Only 1.0 in set arena: the second selector matches (2.0 is in another set).
	resp, err := r.a.Allocate(ctx, &allocationv1.AllocateRequest{Set: "arena", Selectors: newestFirst})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetGameVersion() != "1.0" || resp.GetSelectorIndex() != 1 || resp.GetSet() != "arena" {
		t.Fatalf("got %v", resp)
	}

	// A 2.0 server in arena and a 1.0 one: the preferred 2.0 wins.
	v1 := k.create(t, 1, server{set: "arena", version: "1.0"})
	v2 := k.create(t, 1, server{set: "arena", version: "2.0"})
	r.waitIndexed(t, k.ns, v1[0], v2[0])
	resp, err = r.a.Allocate(ctx, &allocationv1.AllocateRequest{Set: "arena", Selectors: newestFirst})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetName() != v2[0] || resp.GetSelectorIndex() != 0 {
		t.Fatalf("got %v, want %s by selector 0", resp, v2[0])
	}

	// Set-based expressions; no set means any set of the namespace.
	resp, err = r.a.Allocate(ctx, &allocationv1.AllocateRequest{Selectors: []*allocationv1.Selector{
		{MatchExpressions: []*allocationv1.LabelRequirement{{Key: gamev1.LabelSet, Operator: "In", Values: []string{"other"}}}},
	}})
	if err != nil || resp.GetSet() != "other" {
		t.Fatalf("expression selector: %v %v", resp, err)
	}
	// Nothing matches: no server, and the one left is not taken.
	_, err = r.a.Allocate(ctx, &allocationv1.AllocateRequest{Selectors: []*allocationv1.Selector{{MatchLabels: map[string]string{"sdk.game.rally.dev/map": "nuke"}}}})
	if !errors.Is(err, ErrNoServer) {
		t.Fatalf("unmatched selector: %v", err)
	}
	left, err := k.cs.CoreV1().Pods(k.ns).List(ctx, metav1.ListOptions{LabelSelector: gamev1.LabelState + "=Ready"})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Items) != 1 {
		t.Fatalf("%d Ready servers left, want 1", len(left.Items))
	}
}

// Bad requests are refused with INVALID_ARGUMENT before touching a server;
// a token, when configured, is required over gRPC and REST.
func TestBadRequestsAndTokens(t *testing.T) {
	k := newKube(t)
	k.create(t, 1, server{set: "arena", version: "1.0"})
	r := k.startReplica(t, Options{Token: "s3cret"})
	r.waitReady(t, 1)
	ctx := context.Background()
	cl := allocclient.NewClient(r.conn, "s3cret")
	bad := map[string]*allocationv1.AllocateRequest{
		"namespace":          {Namespace: "Not_A_Namespace"},
		"set":                {Set: "-x"},
		"operator":           {Selectors: []*allocationv1.Selector{{MatchExpressions: []*allocationv1.LabelRequirement{{Key: "a", Operator: "Near"}}}}},
		"label value":        {Selectors: []*allocationv1.Selector{{MatchLabels: map[string]string{"a": "not a value"}}}},
		"reserved label":     {Labels: map[string]string{gamev1.LabelState: "Ready"}},
		"empty meta key":     {Metadata: map[string]string{"": "x"}},
		"huge metadata":      {Metadata: map[string]string{"blob": strings.Repeat("x", maxMetadataBytes+1)}},
		"too many selectors": {Selectors: make([]*allocationv1.Selector, maxSelectors+1)},
	}
	for name, req := range bad {
		_, err := cl.Allocate(ctx, req)
		if !errors.Is(err, ErrInvalid) || status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if pod := k.pod(t, "arena-0"); pod.Labels[gamev1.LabelState] != "Ready" {
		t.Fatalf("a refused request changed the server: %v", pod.Labels)
	}
	if _, err := allocclient.NewClient(r.conn, "").Allocate(ctx, &allocationv1.AllocateRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	if _, err := allocclient.NewClient(r.conn, "guess").Allocate(ctx, &allocationv1.AllocateRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong token: %v", err)
	}

	post := func(body, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.httpAddr+RESTPath, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`{}`, ""); code != http.StatusUnauthorized || !strings.Contains(body, "Unauthenticated") {
		t.Fatalf("REST without token: %d %s", code, body)
	}
	if code, body := post(`{"selectors": 3}`, "s3cret"); code != http.StatusBadRequest {
		t.Fatalf("REST bad JSON: %d %s", code, body)
	}
	if code, body := post(`{"namespace": "Bad!"}`, "s3cret"); code != http.StatusBadRequest || !strings.Contains(body, "namespace") {
		t.Fatalf("REST bad namespace: %d %s", code, body)
	}
	resp, err := http.Get("http://" + r.httpAddr + RESTPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	// Two gRPC calls and one REST call without the token, one unreadable
	// REST body; the bad namespace is refused by Allocate itself.
	if v := counter(r.a.m.rejected); v != 4 {
		t.Fatalf("rejected counter %v, want 4", v)
	}
	if v := counter(r.a.m.requests.WithLabelValues("invalid")); v != float64(len(bad)+1) {
		t.Fatalf("invalid counter %v, want %d", v, len(bad)+1)
	}
}

// The REST form: POST JSON, get JSON; 429 when no server is Ready.
func TestRESTAllocate(t *testing.T) {
	k := newKube(t)
	names := k.create(t, 1, server{set: "arena", version: "3.1", ip: "10.1.2.3"})
	r := k.startReplica(t, Options{ClusterDomain: "cluster.local"})
	r.waitReady(t, 1)
	body := `{"set":"arena","selectors":[{"gameVersion":"3.1"}],"metadata":{"match_id":"rest-1"}}`
	resp, err := http.Post("http://"+r.httpAddr+RESTPath, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("REST allocate: %d %s", resp.StatusCode, b)
	}
	var out allocationv1.AllocateResponse
	if err := protojson.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if out.GetName() != names[0] || out.GetIp() != "10.1.2.3" || out.GetAddress() != names[0]+".arena."+k.ns+".svc.cluster.local" {
		t.Fatalf("REST answer: %s", b)
	}
	resp, err = http.Post("http://"+r.httpAddr+RESTPath, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), "ResourceExhausted") {
		t.Fatalf("REST with none Ready: %d %s", resp.StatusCode, b)
	}
}

// A write on a version of the pod that is no longer current is refused
// by the API server and reported as a lost race: a server someone else
// took (another replica, the game server itself) is never handed out
// twice, however late this replica's informer is.
func TestStaleVersionIsRefused(t *testing.T) {
	k := newKube(t)
	names := k.create(t, 1, server{set: "arena", version: "1.0"})
	r := k.startReplica(t, Options{})
	r.waitReady(t, 1)
	old := k.pod(t, names[0])
	patch := []byte(`{"metadata":{"labels":{"game.rally.dev/state":"Allocated"},"annotations":{"game.rally.dev/allocation":"{\"match_id\":\"first\"}"}}}`)
	if _, err := k.cs.CoreV1().Pods(k.ns).Patch(context.Background(), names[0], "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	req, err := r.a.compile(&allocationv1.AllocateRequest{Metadata: map[string]string{"match_id": "second"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.a.mark(context.Background(), old, req, time.Now()); !errors.Is(err, errLost) {
		t.Fatalf("write on a stale version: %v, want errLost", err)
	}
	if got := k.pod(t, names[0]).Annotations[gamev1.AnnotationAllocation]; got != `{"match_id":"first"}` {
		t.Fatalf("the first allocation was overwritten: %s", got)
	}
	r.waitReady(t, 0)
	if _, err := r.a.Allocate(context.Background(), &allocationv1.AllocateRequest{}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("after the server was taken: %v", err)
	}
}

// When the GameServerSet lists spec.ports, those are the ports answered
// (the Service publishes them), not the container's.
func TestPortsComeFromTheSet(t *testing.T) {
	k := newKube(t)
	set := &gamev1.GameServerSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ported", Namespace: k.ns},
		Spec: gamev1.GameServerSetSpec{
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "game", Image: "example.com/g:1"}}}},
			Ports:    []gamev1.GameServerPort{{Name: "play", ContainerPort: 7000, Protocol: corev1.ProtocolUDP}, {Name: "query", ContainerPort: 7001}},
		},
	}
	if err := k.c.Create(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	k.create(t, 1, server{set: "ported", version: "1"})
	r := k.startReplica(t, Options{})
	r.waitReady(t, 1)
	resp, err := r.a.Allocate(context.Background(), &allocationv1.AllocateRequest{Set: "ported"})
	if err != nil {
		t.Fatal(err)
	}
	p := resp.GetPorts()
	if len(p) != 2 || p[0].GetName() != "play" || p[0].GetPort() != 7000 || p[0].GetProtocol() != "UDP" ||
		p[1].GetName() != "query" || p[1].GetProtocol() != "TCP" {
		t.Fatalf("ports %v, want the set's", p)
	}
}
