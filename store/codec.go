package store

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Entries are stored in a compact encoding of our own rather than as
// protobuf: the index is already in the key, and decoding must not cost
// more than one allocation per entry plus the payload copy.
//
//	flags:1 [type:uvarint] [term:uvarint] payload...
//
// The flags record which optional fields were present so that a decoded
// entry is proto.Equal to the one that was written (raft measures entries
// with proto.Size, which depends on field presence).
const (
	entryHasType  byte = 1 << 0
	entryHasTerm  byte = 1 << 1
	entryHasIndex byte = 1 << 2
	entryHasData  byte = 1 << 3
	entryFlagMask      = entryHasType | entryHasTerm | entryHasIndex | entryHasData
)

// encodedEntrySize is the exact size of e's stored value.
func encodedEntrySize(e *pb.Entry) int {
	n := 1 + len(e.Data)
	if e.Type != nil {
		n += uvarintLen(uint64(*e.Type))
	}
	if e.Term != nil {
		n += uvarintLen(*e.Term)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendEntryValue(dst []byte, e *pb.Entry) []byte {
	var flags byte
	if e.Type != nil {
		flags |= entryHasType
	}
	if e.Term != nil {
		flags |= entryHasTerm
	}
	if e.Index != nil {
		flags |= entryHasIndex
	}
	if e.Data != nil {
		flags |= entryHasData
	}
	dst = append(dst, flags)
	if e.Type != nil {
		dst = binary.AppendUvarint(dst, uint64(*e.Type))
	}
	if e.Term != nil {
		dst = binary.AppendUvarint(dst, *e.Term)
	}
	return append(dst, e.Data...)
}

// decodedEntry carries an entry together with the values its pointer fields
// point at, so a decode costs one allocation (plus the payload copy).
type decodedEntry struct {
	entry pb.Entry
	term  uint64
	index uint64
	typ   pb.EntryType
}

// decodeEntry decodes the entry at index from a stored value. The payload is
// copied: value usually belongs to a Pebble iterator.
func decodeEntry(index uint64, value []byte) (*pb.Entry, error) {
	flags, term, typ, payload, err := decodeEntryHeader(value)
	if err != nil {
		return nil, fmt.Errorf("entry %d: %w", index, err)
	}
	d := &decodedEntry{term: term, index: index, typ: typ}
	if flags&entryHasType != 0 {
		d.entry.Type = &d.typ
	}
	if flags&entryHasTerm != 0 {
		d.entry.Term = &d.term
	}
	if flags&entryHasIndex != 0 {
		d.entry.Index = &d.index
	}
	if flags&entryHasData != 0 {
		d.entry.Data = append(make([]byte, 0, len(payload)), payload...)
	}
	return &d.entry, nil
}

// decodeEntryTerm returns only the term of a stored entry.
func decodeEntryTerm(value []byte) (uint64, error) {
	_, term, _, _, err := decodeEntryHeader(value)
	return term, err
}

func decodeEntryHeader(value []byte) (flags byte, term uint64, typ pb.EntryType, payload []byte, err error) {
	if len(value) == 0 || value[0]&^entryFlagMask != 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: bad entry header", ErrCorrupt)
	}
	flags, rest := value[0], value[1:]
	if flags&entryHasType != 0 {
		v, n := binary.Uvarint(rest)
		if n <= 0 || v > uint64(pb.EntryType_EntryConfChangeV2) {
			return 0, 0, 0, nil, fmt.Errorf("%w: bad entry type", ErrCorrupt)
		}
		typ, rest = pb.EntryType(v), rest[n:]
	}
	if flags&entryHasTerm != 0 {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, 0, 0, nil, fmt.Errorf("%w: bad entry term", ErrCorrupt)
		}
		term, rest = v, rest[n:]
	}
	return flags, term, typ, rest, nil
}

// entrySize is the size raft uses to measure entries against maxSize.
func entrySize(e *pb.Entry) uint64 { return uint64(proto.Size(e)) }

// truncatedState is the (index, term) of the last entry removed from the
// log: the log's first index is index+1, and term answers Term(index).
type truncatedState struct {
	index, term uint64
}

func (t truncatedState) encode() []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, t.index)
	binary.BigEndian.PutUint64(b[8:], t.term)
	return b
}

func decodeTruncatedState(b []byte) (truncatedState, error) {
	if len(b) != 16 {
		return truncatedState{}, fmt.Errorf("%w: truncated state of %d bytes", ErrCorrupt, len(b))
	}
	return truncatedState{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, nil
}

// AppliedState is what a group's state machine reflects: the index and term
// of the last applied entry, the configuration as of that entry, and which
// node hosts each replica of that configuration.
type AppliedState struct {
	Index     uint64
	Term      uint64
	ConfState *pb.ConfState
	// Replicas maps replica IDs to the node IDs hosting them.
	Replicas map[uint64]uint64
	// NextReplicaID is the lowest replica ID never used in the group: the
	// leader allocates new replicas from it, so IDs are never reused.
	NextReplicaID uint64
}

// Marshal encodes the applied state (for snapshots sent between hosts).
func (a AppliedState) Marshal() ([]byte, error) { return a.encode() }

// UnmarshalAppliedState decodes what Marshal encoded.
func UnmarshalAppliedState(b []byte) (AppliedState, error) { return decodeAppliedState(b) }

// encode: index:8 term:8 len:uvarint confstate count:uvarint (replica node):uvarint... next:uvarint
func (a AppliedState) encode() ([]byte, error) {
	b := make([]byte, 16, 64)
	binary.BigEndian.PutUint64(b, a.Index)
	binary.BigEndian.PutUint64(b[8:], a.Term)
	cs, err := proto.MarshalOptions{Deterministic: true}.Marshal(pb.EnsureConfState(a.ConfState))
	if err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(len(cs)))
	b = append(b, cs...)
	b = binary.AppendUvarint(b, uint64(len(a.Replicas)))
	for _, id := range slices.Sorted(maps.Keys(a.Replicas)) {
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, a.Replicas[id])
	}
	return binary.AppendUvarint(b, a.NextReplicaID), nil
}

func decodeAppliedState(b []byte) (AppliedState, error) {
	bad := func(what string) (AppliedState, error) {
		return AppliedState{}, fmt.Errorf("%w: applied state: bad %s", ErrCorrupt, what)
	}
	if len(b) < 16 {
		return bad("length")
	}
	a := AppliedState{Index: binary.BigEndian.Uint64(b), Term: binary.BigEndian.Uint64(b[8:]), ConfState: &pb.ConfState{}}
	rest := b[16:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)-k) {
		return bad("conf state length")
	}
	if err := proto.Unmarshal(rest[k:k+int(n)], a.ConfState); err != nil {
		return bad("conf state")
	}
	rest = rest[k+int(n):]
	count, k := binary.Uvarint(rest)
	if k <= 0 || count > uint64(len(rest)) {
		return bad("replica count")
	}
	rest = rest[k:]
	a.Replicas = make(map[uint64]uint64, count)
	for i := uint64(0); i < count; i++ {
		id, k1 := binary.Uvarint(rest)
		if k1 <= 0 {
			return bad("replica")
		}
		node, k2 := binary.Uvarint(rest[k1:])
		if k2 <= 0 {
			return bad("replica node")
		}
		a.Replicas[id] = node
		rest = rest[k1+k2:]
	}
	next, k := binary.Uvarint(rest)
	if k <= 0 {
		return bad("next replica ID")
	}
	a.NextReplicaID, rest = next, rest[k:]
	if len(rest) != 0 {
		return bad("trailing bytes")
	}
	return a, nil
}

func encodeHardState(hs *pb.HardState) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(hs)
}

func decodeHardState(b []byte) (*pb.HardState, error) {
	hs := &pb.HardState{}
	if err := proto.Unmarshal(b, hs); err != nil {
		return nil, fmt.Errorf("%w: hard state: %w", ErrCorrupt, err)
	}
	return hs, nil
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: expected 8 bytes, got %d", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}
