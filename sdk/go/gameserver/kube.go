package gameserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// kubeStore is the pod in the API server. It uses a bare REST client for
// the core API group only, so a game server linking the SDK does not link
// every Kubernetes API type.
type kubeStore struct {
	rc        *rest.RESTClient
	namespace string
	name      string
}

func newKubeStore(cfg *rest.Config, namespace, name string) (*kubeStore, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = "rally-gameserver-sdk"
	}
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("gameserver: API client: %w", err)
	}
	return &kubeStore{rc: rc, namespace: namespace, name: name}, nil
}

func (k *kubeStore) get(ctx context.Context) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := k.rc.Get().Namespace(k.namespace).Resource("pods").Name(k.name).Do(ctx).Into(pod)
	if err != nil {
		return nil, k.wrap("read", err)
	}
	return pod, nil
}

// mergePatch is the JSON merge patch of a podPatch: metadata.resourceVersion
// in the body makes the API server refuse it with a conflict when the pod
// has changed since.
type mergePatch struct {
	Metadata struct {
		ResourceVersion string             `json:"resourceVersion,omitempty"`
		Labels          map[string]*string `json:"labels,omitempty"`
		Annotations     map[string]*string `json:"annotations,omitempty"`
	} `json:"metadata"`
}

func (k *kubeStore) patch(ctx context.Context, p *podPatch) (*corev1.Pod, error) {
	var mp mergePatch
	mp.Metadata.ResourceVersion = p.resourceVersion
	mp.Metadata.Labels = p.labels
	mp.Metadata.Annotations = p.annotations
	body, err := json.Marshal(mp)
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	err = k.rc.Patch(types.MergePatchType).Namespace(k.namespace).Resource("pods").Name(k.name).
		Body(body).Do(ctx).Into(pod)
	if apierrors.IsConflict(err) {
		return nil, errConflict
	}
	if err != nil {
		return nil, k.wrap("update", err)
	}
	return pod, nil
}

func (k *kubeStore) wrap(op string, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: pod %s/%s", ErrGone, k.namespace, k.name)
	}
	return fmt.Errorf("gameserver: %s pod %s/%s: %w", op, k.namespace, k.name, err)
}

// watch reads the pod, then follows it with a watch from that version;
// when the watch ends (the API server closes watches after a while, or
// the version is too old) it reads again and watches again.
func (k *kubeStore) watch(ctx context.Context, fn func(*corev1.Pod)) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		pod, err := k.get(ctx)
		if err == nil {
			fn(pod)
			err = k.follow(ctx, pod.ResourceVersion, fn)
			if err == nil {
				backoff = 100 * time.Millisecond
				continue
			}
		}
		if ctx.Err() != nil {
			break
		}
		if isGone(err) {
			return err
		}
		// The API server is unreachable: try again, more slowly each time.
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

func isGone(err error) bool { return errors.Is(err, ErrGone) }

// errWatchExpired: the API server ended the watch with an error event.
var errWatchExpired = errors.New("gameserver: watch expired")

// follow delivers the pod's changes after version rv until the watch ends
// (nil: read again) or the pod is deleted (ErrGone).
func (k *kubeStore) follow(ctx context.Context, rv string, fn func(*corev1.Pod)) error {
	opts := &metav1.ListOptions{
		FieldSelector:       fields.OneTermEqualSelector("metadata.name", k.name).String(),
		ResourceVersion:     rv,
		Watch:               true,
		AllowWatchBookmarks: true,
	}
	w, err := k.rc.Get().Namespace(k.namespace).Resource("pods").
		VersionedParams(opts, metav1.ParameterCodec).Watch(ctx)
	if err != nil {
		return k.wrap("watch", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if pod, ok := ev.Object.(*corev1.Pod); ok {
					fn(pod)
				}
			case watch.Deleted:
				return fmt.Errorf("%w: pod %s/%s", ErrGone, k.namespace, k.name)
			case watch.Error:
				// Usually "too old resource version": read again.
				return errWatchExpired
			}
		}
	}
}
