// Package envelope reads and writes the realtime protocol's Envelope. The
// messages on the hot path (a player's SendData and AckState in, Data and
// StateFrame out) are handled directly on the protobuf wire format without
// allocating; everything else goes through the generated code.
package envelope

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	rtv1 "github.com/rallyhq/rally/api/proto/rally/realtime/v1"
)

// Field numbers of Envelope and the hot messages, as in realtime.proto.
const (
	fEnvCID        = 1
	fEnvError      = 2
	fEnvSendData   = 14
	fEnvAckState   = 15
	fEnvData       = 50
	fEnvStateFrame = 52

	fSendRoomID  = 1
	fSendOp      = 2
	fSendPayload = 3
	fSendToUsers = 4

	fAckRoomID = 1
	fAckTick   = 2

	fDataRoomID   = 1
	fDataFromUser = 2
	fDataOp       = 3
	fDataPayload  = 4

	fFrameRoomID   = 1
	fFrameTick     = 2
	fFrameBaseTick = 3
	fFrameData     = 4
	fFrameMessages = 5
)

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("malformed envelope")

// Kind says which message an Envelope holds, for the fast path.
type Kind uint8

const (
	// KindOther is any message the fast path leaves to Full.
	KindOther Kind = iota
	KindSendData
	KindAckState
)

// Fast is the fast path's view of an incoming Envelope. Its byte slices
// alias the frame they were decoded from and are valid until that buffer is
// reused.
type Fast struct {
	CID  uint32
	Kind Kind
	// RoomID is shared by SendData and AckState.
	RoomID []byte
	// SendData.
	Op      uint32
	Payload []byte
	// ToUsers holds up to len(toUsers) targets; more fall back to Full.
	ToUsers [][]byte
	toUsers [8][]byte
	// AckState.
	Tick uint32
}

// DecodeFast decodes a binary Envelope holding SendData or AckState without
// allocating. Any other message sets Kind to KindOther (with CID), and the
// caller decodes it with Full.
func DecodeFast(b []byte, f *Fast) error {
	*f = Fast{}
	f.ToUsers = f.toUsers[:0]
	var inner []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed(n)
		}
		b = b[n:]
		switch {
		case num == fEnvCID && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return malformed(n)
			}
			f.CID, b = uint32(v), b[n:]
		case (num == fEnvSendData || num == fEnvAckState) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed(n)
			}
			// A later oneof member replaces an earlier one, as in proto.
			inner, b = v, b[n:]
			f.Kind = KindSendData
			if num == fEnvAckState {
				f.Kind = KindAckState
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return malformed(n)
			}
			b = b[n:]
			if num != fEnvCID {
				f.Kind = KindOther
				inner = nil
			}
		}
	}
	switch f.Kind {
	case KindSendData:
		return decodeSendData(inner, f)
	case KindAckState:
		return decodeAckState(inner, f)
	}
	return nil
}

func decodeSendData(b []byte, f *Fast) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed(n)
		}
		b = b[n:]
		switch {
		case num == fSendRoomID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed(n)
			}
			f.RoomID, b = v, b[n:]
		case num == fSendOp && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return malformed(n)
			}
			f.Op, b = uint32(v), b[n:]
		case num == fSendPayload && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed(n)
			}
			f.Payload, b = v, b[n:]
		case num == fSendToUsers && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed(n)
			}
			if len(f.ToUsers) == len(f.toUsers) {
				return fmt.Errorf("%w: more than %d target users", ErrMalformed, len(f.toUsers))
			}
			f.ToUsers, b = append(f.ToUsers, v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return malformed(n)
			}
			b = b[n:]
		}
	}
	return nil
}

func decodeAckState(b []byte, f *Fast) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed(n)
		}
		b = b[n:]
		switch {
		case num == fAckRoomID && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed(n)
			}
			f.RoomID, b = v, b[n:]
		case num == fAckTick && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return malformed(n)
			}
			f.Tick, b = uint32(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return malformed(n)
			}
			b = b[n:]
		}
	}
	return nil
}

func malformed(n int) error {
	return fmt.Errorf("%w: %v", ErrMalformed, protowire.ParseError(n))
}

// Full decodes any Envelope in binary (json false) or protojson form.
func Full(b []byte, json bool, env *rtv1.Envelope) error {
	var err error
	if json {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, env)
	} else {
		err = proto.Unmarshal(b, env)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// Marshal encodes env in binary or protojson form, appending to dst.
func Marshal(dst []byte, env *rtv1.Envelope, json bool) ([]byte, error) {
	if json {
		out, err := protojson.Marshal(env)
		return append(dst, out...), err
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, env)
}

// ToJSON re-encodes a binary Envelope as protojson, for clients that chose
// the JSON format.
func ToJSON(dst, binary []byte) ([]byte, error) {
	var env rtv1.Envelope
	if err := proto.Unmarshal(binary, &env); err != nil {
		return dst, err
	}
	return Marshal(dst, &env, true)
}

// AppendData appends a binary Envelope holding a Data push.
func AppendData(dst []byte, roomID, fromUser string, op uint32, payload []byte) []byte {
	size := sizeString(fDataRoomID, roomID) + sizeString(fDataFromUser, fromUser) +
		sizeVarint(fDataOp, uint64(op)) + sizeBytes(fDataPayload, payload)
	dst = protowire.AppendTag(dst, fEnvData, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	dst = appendString(dst, fDataRoomID, roomID)
	dst = appendString(dst, fDataFromUser, fromUser)
	dst = appendVarint(dst, fDataOp, uint64(op))
	return appendBytes(dst, fDataPayload, payload)
}

// StateFrameHeader appends the start of a binary Envelope holding a
// StateFrame whose data field is dataLen bytes long, followed by msgsLen
// bytes of messages made with AppendFrameMessage. The caller appends exactly
// those bytes next: the data, then the messages. Splitting it this way lets
// the state encoder write straight into the outgoing buffer.
func StateFrameHeader(dst []byte, roomID string, tick, baseTick uint32, dataLen, msgsLen int) []byte {
	size := sizeString(fFrameRoomID, roomID) + sizeVarint(fFrameTick, uint64(tick)) +
		sizeVarint(fFrameBaseTick, uint64(baseTick)) + msgsLen
	if dataLen > 0 {
		size += protowire.SizeTag(fFrameData) + protowire.SizeBytes(dataLen)
	}
	dst = protowire.AppendTag(dst, fEnvStateFrame, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	dst = appendString(dst, fFrameRoomID, roomID)
	dst = appendVarint(dst, fFrameTick, uint64(tick))
	dst = appendVarint(dst, fFrameBaseTick, uint64(baseTick))
	if dataLen > 0 {
		dst = protowire.AppendTag(dst, fFrameData, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(dataLen))
	}
	return dst
}

// AppendFrameMessage appends one entry of StateFrame.messages: a Data from
// the game logic, without a room id (the frame has it).
func AppendFrameMessage(dst []byte, op uint32, payload []byte) []byte {
	size := sizeVarint(fDataOp, uint64(op)) + sizeBytes(fDataPayload, payload)
	dst = protowire.AppendTag(dst, fFrameMessages, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	dst = appendVarint(dst, fDataOp, uint64(op))
	return appendBytes(dst, fDataPayload, payload)
}

// AppendError appends a binary Envelope holding an Error.
func AppendError(dst []byte, cid uint32, code rtv1.Error_Code, msg string) []byte {
	size := sizeVarint(1, uint64(code)) + sizeString(2, msg)
	dst = appendVarint(dst, fEnvCID, uint64(cid))
	dst = protowire.AppendTag(dst, fEnvError, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	dst = appendVarint(dst, 1, uint64(code))
	return appendString(dst, 2, msg)
}

// Proto3 omits zero values; so do these helpers, to match proto.Marshal.

func sizeString(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func sizeBytes(num protowire.Number, b []byte) int {
	if len(b) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(b))
}

func sizeVarint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func appendString(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendString(dst, s)
}

func appendBytes(dst []byte, num protowire.Number, b []byte) []byte {
	if len(b) == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendBytes(dst, b)
}

func appendVarint(dst []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.VarintType)
	return protowire.AppendVarint(dst, v)
}
