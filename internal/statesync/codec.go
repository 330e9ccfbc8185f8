// State sync wire format (the data of a StateFrame).
//
// Primitives:
//
//	uvarint  unsigned LEB128, 7 bits per byte, low group first, high bit
//	         set on every byte but the last (encoding/binary Uvarint); at
//	         most 10 bytes.
//	svarint  a signed value zigzag-mapped to unsigned, (n << 1) ^ (n >> 63),
//	         so small magnitudes of either sign stay short (0→0, -1→1,
//	         1→2, -2→3, ...), then written as a uvarint (encoding/binary
//	         Varint).
//
// Values: field i of an entity travels as the integer q = round(v / quantum_i)
// (half away from zero; NaN as 0; saturated to the int64 range) and decodes
// as q * quantum_i. Differences of quantized values wrap in two's
// complement int64 on both sides, so every int64 survives a round trip.
//
// Ids: entities are written in ascending id order, each id as the uvarint
// gap id - next, where next starts at 0 and becomes id + 1 after each
// entity. The first id is thus written as itself, consecutive ids as 0, and
// no encoding can repeat or reorder ids. The decoded id must not exceed
// 2^32 - 1.
//
// A frame is a full snapshot when the StateFrame's base_tick is 0, and a
// delta against the state at base_tick otherwise; the data does not repeat
// which. Nothing follows the last entity: trailing bytes are an error.
//
// Full snapshot:
//
//	uvarint count                  entities in the snapshot (<= 65536)
//	count × {
//	    uvarint id gap
//	    svarint q                  one per schema field, in schema order
//	}
//
// Delta:
//
//	uvarint removed                entities in the base but not in this tick
//	removed × {
//	    uvarint id gap             gaps restart at 0 for this list
//	}
//	uvarint changed                entities added, or present in both with
//	                               at least one value changed
//	changed × {
//	    uvarint id gap             gaps restart at 0 for this list
//	    uvarint mask               bit i set: field i follows; never 0
//	    svarint diff               per set bit, ascending: q - base q
//	}
//
// An entity absent in the base is sent with every field's bit set and its
// values relative to 0. Entities present in both and unchanged are not
// written. A removed id must be in the base and not among the changed ids.
// The result holds at most 65536 entities.
//
// Client: it keeps the states of its last applied ticks, ignores a frame
// whose tick is not above its newest, applies a delta only onto the state
// of exactly base_tick, and asks for a full snapshot when it no longer holds
// base_tick. The server encodes against the newest tick the client
// acknowledged, so a lost or late frame costs bytes, never correctness.
//
// Sizes: a delta where one entity (id < 128) moved by less than 64 quanta in
// x and y is 6 bytes: 0 removed, 1 changed, id gap, mask, two diffs. Each
// further such entity with a nearby id adds 4 bytes.

package statesync

import (
	"encoding/binary"
	"fmt"
	"math"
)

// appendFull appends s as a full snapshot.
func appendFull(dst []byte, nf int, s *snapshot) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s.ids)))
	var next uint32
	for i, id := range s.ids {
		dst = binary.AppendUvarint(dst, uint64(id-next))
		next = id + 1
		for _, q := range s.vals[i*nf : (i+1)*nf] {
			dst = binary.AppendVarint(dst, q)
		}
	}
	return dst
}

// appendDelta appends cur as a delta against base. It walks both id lists
// three times (count, removals, changes) rather than buffering, so it needs
// no scratch memory.
func appendDelta(dst []byte, nf int, base, cur *snapshot) []byte {
	bi, ci := base.ids, cur.ids
	removed, changed := 0, 0
	for i, j := 0, 0; i < len(bi) || j < len(ci); {
		switch {
		case j == len(ci) || (i < len(bi) && bi[i] < ci[j]):
			removed++
			i++
		case i == len(bi) || ci[j] < bi[i]:
			changed++
			j++
		default:
			if changedMask(base.vals[i*nf:(i+1)*nf], cur.vals[j*nf:(j+1)*nf]) != 0 {
				changed++
			}
			i++
			j++
		}
	}

	dst = binary.AppendUvarint(dst, uint64(removed))
	var next uint32
	for i, j := 0, 0; i < len(bi) && removed > 0; {
		switch {
		case j == len(ci) || bi[i] < ci[j]:
			dst = binary.AppendUvarint(dst, uint64(bi[i]-next))
			next = bi[i] + 1
			removed--
			i++
		case ci[j] < bi[i]:
			j++
		default:
			i++
			j++
		}
	}

	dst = binary.AppendUvarint(dst, uint64(changed))
	next = 0
	full := uint32(uint64(1)<<nf - 1)
	for i, j := 0, 0; j < len(ci) && changed > 0; {
		switch {
		case i < len(bi) && bi[i] < ci[j]:
			i++
		case i == len(bi) || ci[j] < bi[i]:
			dst = binary.AppendUvarint(dst, uint64(ci[j]-next))
			next = ci[j] + 1
			dst = binary.AppendUvarint(dst, uint64(full))
			for _, q := range cur.vals[j*nf : (j+1)*nf] {
				dst = binary.AppendVarint(dst, q)
			}
			changed--
			j++
		default:
			bv, cv := base.vals[i*nf:(i+1)*nf], cur.vals[j*nf:(j+1)*nf]
			if mask := changedMask(bv, cv); mask != 0 {
				dst = binary.AppendUvarint(dst, uint64(ci[j]-next))
				next = ci[j] + 1
				dst = binary.AppendUvarint(dst, uint64(mask))
				for k := range cv {
					if mask&(1<<k) != 0 {
						dst = binary.AppendVarint(dst, cv[k]-bv[k])
					}
				}
				changed--
			}
			i++
			j++
		}
	}
	return dst
}

// changedMask has bit k set where a[k] != b[k].
func changedMask(a, b []int64) uint32 {
	var m uint32
	for k := range a {
		if a[k] != b[k] {
			m |= 1 << k
		}
	}
	return m
}

// reader consumes frame data, remembering the first error so callers can
// check once per entity rather than once per varint.
type reader struct {
	buf []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.buf) > 0 && r.buf[0] < 0x80 { // most varints here are one byte
		v := r.buf[0]
		r.buf = r.buf[1:]
		return uint64(v)
	}
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	if len(r.buf) > 0 && r.buf[0] < 0x80 {
		v := int64(r.buf[0] >> 1)
		if r.buf[0]&1 != 0 {
			v = ^v
		}
		r.buf = r.buf[1:]
		return v
	}
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.fail("bad svarint")
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

// count reads an entity count that cannot exceed limit nor need more than
// the remaining bytes at minBytes each; checking before allocating keeps
// memory proportional to the input.
func (r *reader) count(limit, minBytes int) int {
	n := r.uvarint()
	if r.err == nil && (n > uint64(limit) || n > uint64(len(r.buf)/minBytes)) {
		r.fail("count %d exceeds limit or data", n)
		return 0
	}
	return int(n)
}

// id reads one id gap and advances *next past the id.
func (r *reader) id(next *uint64) uint32 {
	gap := r.uvarint()
	if r.err != nil {
		return 0
	}
	if gap > math.MaxUint32 || *next+gap > math.MaxUint32 {
		r.fail("id out of range")
		return 0
	}
	id := *next + gap
	*next = id + 1
	return uint32(id)
}

// decodeFull decodes a full snapshot into out, reusing its memory.
func decodeFull(out *snapshot, nf int, data []byte) error {
	r := reader{buf: data}
	n := r.count(MaxEntities, 1+nf)
	out.ids = out.ids[:0]
	out.vals = out.vals[:0]
	var next uint64
	for range n {
		id := r.id(&next)
		out.ids = append(out.ids, id)
		for range nf {
			out.vals = append(out.vals, r.varint())
		}
		if r.err != nil {
			return r.err
		}
	}
	if r.err == nil && len(r.buf) != 0 {
		r.fail("%d trailing bytes", len(r.buf))
	}
	return r.err
}

// deltaDecoder merges a delta with its base into out, walking the base once.
type deltaDecoder struct {
	nf      int
	base    *snapshot
	out     *snapshot
	removed []uint32
	bi, ri  int
}

// copyBase copies base entities with ids below limit to out, dropping the
// removed ones; a removed id that the walk passes without meeting it in the
// base is an error.
func (d *deltaDecoder) copyBase(limit uint64) error {
	for ; d.bi < len(d.base.ids) && uint64(d.base.ids[d.bi]) < limit; d.bi++ {
		id := d.base.ids[d.bi]
		if d.ri < len(d.removed) {
			if r := d.removed[d.ri]; r < id {
				return fmt.Errorf("%w: removed id %d not in base", ErrMalformed, r)
			} else if r == id {
				d.ri++
				continue
			}
		}
		if len(d.out.ids) == MaxEntities {
			return fmt.Errorf("%w: more than %d entities", ErrMalformed, MaxEntities)
		}
		d.out.ids = append(d.out.ids, id)
		d.out.vals = append(d.out.vals, d.base.vals[d.bi*d.nf:(d.bi+1)*d.nf]...)
	}
	return nil
}

// decodeDelta applies data to base into out. removed is scratch space,
// returned for reuse.
func decodeDelta(out, base *snapshot, nf int, data []byte, removed []uint32) ([]uint32, error) {
	r := reader{buf: data}
	nrem := r.count(len(base.ids), 1)
	removed = removed[:0]
	var next uint64
	for range nrem {
		removed = append(removed, r.id(&next))
	}
	nchg := r.count(MaxEntities, 3)
	if r.err != nil {
		return removed, r.err
	}

	out.ids = out.ids[:0]
	out.vals = out.vals[:0]
	d := deltaDecoder{nf: nf, base: base, out: out, removed: removed}
	full := uint64(1)<<nf - 1
	next = 0
	for range nchg {
		id := r.id(&next)
		mask := r.uvarint()
		if r.err != nil {
			return removed, r.err
		}
		if mask == 0 || mask > full {
			return removed, fmt.Errorf("%w: id %d has field mask %#x", ErrMalformed, id, mask)
		}
		if err := d.copyBase(uint64(id)); err != nil {
			return removed, err
		}
		if d.ri < len(removed) && removed[d.ri] == id {
			return removed, fmt.Errorf("%w: id %d both removed and changed", ErrMalformed, id)
		}
		if len(out.ids) == MaxEntities {
			return removed, fmt.Errorf("%w: more than %d entities", ErrMalformed, MaxEntities)
		}
		out.ids = append(out.ids, id)
		if d.bi < len(base.ids) && base.ids[d.bi] == id {
			out.vals = append(out.vals, base.vals[d.bi*nf:(d.bi+1)*nf]...)
			d.bi++
		} else {
			if mask != full {
				return removed, fmt.Errorf("%w: new id %d lacks fields", ErrMalformed, id)
			}
			for range nf {
				out.vals = append(out.vals, 0)
			}
		}
		vals := out.vals[len(out.vals)-nf:]
		for k := range vals {
			if mask&(1<<k) != 0 {
				vals[k] += r.varint()
			}
		}
		if r.err != nil {
			return removed, r.err
		}
	}
	if len(r.buf) != 0 {
		return removed, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.buf))
	}
	if err := d.copyBase(math.MaxUint32 + 1); err != nil {
		return removed, err
	}
	if d.ri != len(removed) {
		return removed, fmt.Errorf("%w: removed id %d not in base", ErrMalformed, removed[d.ri])
	}
	return removed, nil
}
