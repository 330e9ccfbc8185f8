// Package reqlimit bounds every field of every service request at the edge,
// before a handler sees it: each string and bytes field has a size limit
// and each repeated or map field a count limit, whatever the service. The
// domains still check their own, usually tighter, rules (chat text,
// leaderboard metadata, page sizes); this is the floor no request gets
// under. gRPC calls and socket Calls run the same check.
package reqlimit

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Default limits, for fields not in Overrides.
const (
	// MaxString bounds a string field (ids, names, queues, keys, labels).
	MaxString = 256
	// MaxBytes bounds a bytes field.
	MaxBytes = 64 << 10
	// MaxItems bounds the entries of a repeated or map field.
	MaxItems = 100
	// maxDepth bounds nested messages, which no request needs deeper.
	maxDepth = 8
)

// Overrides are the fields whose content is larger by nature, by full
// field name; the domain's own setting is the real limit below these.
var Overrides = map[protoreflect.FullName]int{
	"rally.chat.v1.SendRequest.text":              256 << 10, // chat.max_message_bytes is at most 256 KiB
	"rally.chat.v1.EditRequest.text":              256 << 10,
	"rally.chat.v1.HistoryRequest.cursor":         1 << 10,
	"rally.leaderboard.v1.SubmitRequest.metadata": 64 << 10, // leaderboard.max_metadata_bytes is at most 64 KiB
	"rally.leaderboard.v1.Board.metadata":         64 << 10,
	"rally.leaderboard.v1.TopRequest.cursor":      1 << 10,
}

// Check returns an InvalidArgument status naming the first field over its
// limit, or nil.
func Check(m proto.Message) error {
	if m == nil {
		return nil
	}
	if err := check(m.ProtoReflect(), 0); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

func check(m protoreflect.Message, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: nested more than %d deep", m.Descriptor().FullName(), maxDepth)
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if err := checkField(fd, m.Get(fd), depth); err != nil {
			return err
		}
	}
	return nil
}

func checkField(fd protoreflect.FieldDescriptor, v protoreflect.Value, depth int) error {
	switch {
	case fd.IsList():
		l := v.List()
		if l.Len() > MaxItems {
			return fmt.Errorf("%s: %d entries, at most %d", fd.Name(), l.Len(), MaxItems)
		}
		for i := range l.Len() {
			if err := checkValue(fd, l.Get(i), depth); err != nil {
				return err
			}
		}
	case fd.IsMap():
		mp := v.Map()
		if mp.Len() > MaxItems {
			return fmt.Errorf("%s: %d entries, at most %d", fd.Name(), mp.Len(), MaxItems)
		}
		var err error
		mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if err = checkValue(fd.MapKey(), k.Value(), depth); err != nil {
				return false
			}
			err = checkValue(fd.MapValue(), mv, depth)
			return err == nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", fd.Name(), err)
		}
	default:
		return checkValue(fd, v, depth)
	}
	return nil
}

// checkValue checks one value of fd (one element of a list or map).
func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, depth int) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if n, limit := len(v.String()), limitOf(fd, MaxString); n > limit {
			return fmt.Errorf("%s: %d bytes, at most %d", fieldName(fd), n, limit)
		}
	case protoreflect.BytesKind:
		if n, limit := len(v.Bytes()), limitOf(fd, MaxBytes); n > limit {
			return fmt.Errorf("%s: %d bytes, at most %d", fieldName(fd), n, limit)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if err := check(v.Message(), depth+1); err != nil {
			return fmt.Errorf("%s.%w", fieldName(fd), err)
		}
	}
	return nil
}

// limitOf is fd's override, looked up by the field's own name or, for a
// map's key and value, by the map field's name.
func limitOf(fd protoreflect.FieldDescriptor, def int) int {
	name := fd.FullName()
	if p, ok := fd.Parent().(protoreflect.MessageDescriptor); ok && p.IsMapEntry() {
		if fd.Name() == "key" {
			return def // map keys keep the default
		}
		if mf, ok := p.Parent().(protoreflect.MessageDescriptor); ok {
			name = mf.FullName().Append(protoreflect.Name(mapFieldName(p)))
		}
	}
	if n, ok := Overrides[name]; ok {
		return n
	}
	return def
}

// mapFieldName recovers a map field's name from its entry type
// ("MetadataEntry" is the entry of "metadata").
func mapFieldName(entry protoreflect.MessageDescriptor) string {
	parent, ok := entry.Parent().(protoreflect.MessageDescriptor)
	if !ok {
		return ""
	}
	fields := parent.Fields()
	for i := range fields.Len() {
		if f := fields.Get(i); f.IsMap() && f.Message() == entry {
			return string(f.Name())
		}
	}
	return ""
}

func fieldName(fd protoreflect.FieldDescriptor) string {
	if p, ok := fd.Parent().(protoreflect.MessageDescriptor); ok && p.IsMapEntry() {
		return string(fd.Name()) // "key" or "value", after the map's name
	}
	return string(fd.Name())
}

// UnaryServerInterceptor refuses unary requests over a limit.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if m, ok := req.(proto.Message); ok {
			if err := Check(m); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor refuses stream requests over a limit, as each is
// received.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, checkedStream{ss})
	}
}

type checkedStream struct{ grpc.ServerStream }

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if msg, ok := m.(proto.Message); ok {
		return Check(msg)
	}
	return nil
}
