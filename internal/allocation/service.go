package allocation

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	allocationv1 "github.com/rallyhq/rally/api/proto/rally/allocation/v1"
)

// RESTPath is where the REST form of Allocate is served (POST, JSON).
const RESTPath = "/v1/gameserverallocations"

// maxBodyBytes bounds a REST request body.
const maxBodyBytes = 1 << 20

// Service serves rally.allocation.v1.AllocationService over an Allocator.
type Service struct {
	allocationv1.UnimplementedAllocationServiceServer
	a *Allocator
}

// NewService returns the gRPC service.
func NewService(a *Allocator) *Service { return &Service{a: a} }

// Allocate implements AllocationService.
func (s *Service) Allocate(ctx context.Context, req *allocationv1.AllocateRequest) (*allocationv1.AllocateResponse, error) {
	resp, err := s.a.Allocate(ctx, req)
	if err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}

func grpcError(err error) error {
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNoServer):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrContention):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// httpStatus is the HTTP status of a gRPC code, as gRPC-gateway maps them.
var httpStatus = map[codes.Code]int{
	codes.InvalidArgument:   http.StatusBadRequest,
	codes.Unauthenticated:   http.StatusUnauthorized,
	codes.ResourceExhausted: http.StatusTooManyRequests,
	codes.Aborted:           http.StatusConflict,
	codes.Canceled:          499,
	codes.DeadlineExceeded:  http.StatusGatewayTimeout,
	codes.Internal:          http.StatusInternalServerError,
}

// tokenOK reports whether an "authorization" value carries the token.
func tokenOK(want string, values []string) bool {
	if want == "" {
		return true
	}
	for _, v := range values {
		scheme, tok, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "bearer") &&
			subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(want)) == 1 {
			return true
		}
	}
	return false
}

// UnaryInterceptor requires Options.Token (when set) from every caller.
func (s *Service) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if !tokenOK(s.a.opts.Token, md.Get("authorization")) {
			s.a.m.rejected.WithLabelValues("unauthenticated").Inc()
			return nil, status.Error(codes.Unauthenticated, "allocation: missing or wrong bearer token")
		}
		return handler(ctx, req)
	}
}

// ServeHTTP serves POST /v1/gameserverallocations: the body is the JSON
// form of AllocateRequest, the answer the JSON form of AllocateResponse, or
// {"code": "...", "message": "..."} with the matching HTTP status.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != RESTPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeHTTPError(w, status.Error(codes.InvalidArgument, "allocation: use POST"), http.StatusMethodNotAllowed)
		return
	}
	if !tokenOK(s.a.opts.Token, r.Header.Values("Authorization")) {
		s.a.m.rejected.WithLabelValues("unauthenticated").Inc()
		writeHTTPError(w, status.Error(codes.Unauthenticated, "allocation: missing or wrong bearer token"), 0)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil || len(body) > maxBodyBytes {
		s.a.m.rejected.WithLabelValues("bad_request").Inc()
		writeHTTPError(w, status.Error(codes.InvalidArgument, "allocation: request body unreadable or over 1 MiB"), 0)
		return
	}
	req := &allocationv1.AllocateRequest{}
	if len(body) > 0 {
		if err := protojson.Unmarshal(body, req); err != nil {
			s.a.m.rejected.WithLabelValues("bad_request").Inc()
			writeHTTPError(w, status.Error(codes.InvalidArgument, "allocation: request body: "+err.Error()), 0)
			return
		}
	}
	resp, err := s.Allocate(r.Context(), req)
	if err != nil {
		writeHTTPError(w, err, 0)
		return
	}
	out, err := protojson.Marshal(resp)
	if err != nil {
		writeHTTPError(w, status.Error(codes.Internal, err.Error()), 0)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func writeHTTPError(w http.ResponseWriter, err error, code int) {
	st := status.Convert(err)
	if code == 0 {
		code = httpStatus[st.Code()]
		if code == 0 {
			code = http.StatusInternalServerError
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"code": st.Code().String(), "message": st.Message()})
}
