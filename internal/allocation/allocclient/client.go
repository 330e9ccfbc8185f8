// Package allocclient asks a rally-operator for dedicated game servers: the
// allocation API's Go client, and the matchmaker's Allocator built on it. It
// links no Kubernetes code, so the rally binary that matches players stays
// small; the allocation itself runs in the operator (package allocation).
package allocclient

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	allocationv1 "github.com/rallyhq/rally/api/proto/rally/allocation/v1"
)

// The allocation API's refusals, matched with errors.Is on what Client and
// the operator's Allocator return.
var (
	// ErrInvalid wraps every reason a request is refused.
	ErrInvalid = errors.New("allocation: invalid request")
	// ErrNoServer: no Ready server matches (RESOURCE_EXHAUSTED).
	ErrNoServer = errors.New("allocation: no Ready game server matches")
	// ErrContention: every try lost a race to another allocator (ABORTED);
	// retrying is safe.
	ErrContention = errors.New("allocation: too much contention, retry")
)

// Interface is what allocates: the operator's *allocation.Allocator in its
// own process, a *Client anywhere else.
type Interface interface {
	Allocate(ctx context.Context, req *allocationv1.AllocateRequest) (*allocationv1.AllocateResponse, error)
}

// Client calls the allocation API over gRPC. Its errors wrap the package's
// ErrInvalid, ErrNoServer and ErrContention where they apply.
type Client struct {
	c     allocationv1.AllocationServiceClient
	token string
}

// NewClient returns a client over conn (e.g. grpc.NewClient to
// "rally-operator-allocation.rally-system:7070"); token is sent as a
// bearer token when not empty.
func NewClient(conn grpc.ClientConnInterface, token string) *Client {
	return &Client{c: allocationv1.NewAllocationServiceClient(conn), token: token}
}

// Allocate asks for a game server.
func (c *Client) Allocate(ctx context.Context, req *allocationv1.AllocateRequest) (*allocationv1.AllocateResponse, error) {
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	resp, err := c.c.Allocate(ctx, req)
	if err != nil {
		return nil, clientError(err)
	}
	return resp, nil
}

// remoteError keeps the gRPC status (for status.Code) and matches the
// package's sentinel errors (for errors.Is).
type remoteError struct {
	st   *status.Status
	kind error
}

func (e *remoteError) Error() string              { return e.st.Message() }
func (e *remoteError) GRPCStatus() *status.Status { return e.st }
func (e *remoteError) Is(target error) bool       { return target == e.kind }

func clientError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var kind error
	switch st.Code() {
	case codes.InvalidArgument:
		kind = ErrInvalid
	case codes.ResourceExhausted:
		kind = ErrNoServer
	case codes.Aborted:
		kind = ErrContention
	default:
		return err
	}
	return &remoteError{st: st, kind: kind}
}

var _ Interface = (*Client)(nil)
