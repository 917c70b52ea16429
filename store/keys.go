package store

import (
	"encoding/binary"
	"fmt"
)

// Key layout. Every key Flotilla writes starts with one of two prefix bytes:
//
//	0x01 host keys:   0x01 <name>                         (store format version, identity)
//	0x02 group keys:  0x02 <groupID:8 BE> <span:1> <suffix>
//
// A group's keys sort together, and inside the group they fall into two
// spans so that a snapshot install or a removal can replace or delete the
// replica span as a whole while the identity span survives it:
//
//	span 0x01 (replica span)
//	  0x01                       hard state
//	  0x02                       truncated state (index, term of the last truncated entry)
//	  0x03                       applied state (index, term, ConfState)
//	  0x04 <chunk:4 BE>          an in-memory state machine's durable snapshot, in chunks
//	  0x05 <index:8 BE>          raft log entries
//	  0x06 <user key>            the on-disk state machine's data
//	span 0x02 (identity span)
//	  0x01                       replica ID of the replica hosted here
//	  0x02                       tombstone: the next replica ID allowed here
//
// The sub-keys of the replica span are ordered so that a snapshot's tables
// are written in one pass each: raft state in one, then the state snapshot,
// the log entries a state machine reads back (kept below the truncation;
// see GroupStorage.ReadLog) and the state machine's data in the other.
const (
	prefixHost  byte = 0x01
	prefixGroup byte = 0x02

	spanReplica  byte = 0x01
	spanIdentity byte = 0x02

	keyHardState     byte = 0x01
	keyTruncated     byte = 0x02
	keyApplied       byte = 0x03
	keyStateSnapshot byte = 0x04
	keyLog           byte = 0x05
	keyData          byte = 0x06

	keyReplicaID byte = 0x01
	keyTombstone byte = 0x02

	groupPrefixLen = 1 + 8
	spanPrefixLen  = groupPrefixLen + 1
	logKeyLen      = spanPrefixLen + 1 + 8
)

// hostFormatKey holds the store's on-disk format version.
var hostFormatKey = []byte{prefixHost, 'f', 'o', 'r', 'm', 'a', 't'}

// hostIdentityKey holds the cluster ID and node ID (8 bytes BE each) the
// store was first opened for.
var hostIdentityKey = []byte{prefixHost, 'i', 'd'}

func appendGroupPrefix(dst []byte, groupID uint64) []byte {
	dst = append(dst, prefixGroup)
	return binary.BigEndian.AppendUint64(dst, groupID)
}

func groupPrefix(groupID uint64) []byte {
	return appendGroupPrefix(make([]byte, 0, groupPrefixLen), groupID)
}

// groupKey builds <group prefix><span><sub>.
func groupKey(groupID uint64, span, sub byte) []byte {
	k := make([]byte, 0, spanPrefixLen+1)
	k = appendGroupPrefix(k, groupID)
	return append(k, span, sub)
}

func hardStateKey(groupID uint64) []byte { return groupKey(groupID, spanReplica, keyHardState) }
func truncatedKey(groupID uint64) []byte { return groupKey(groupID, spanReplica, keyTruncated) }
func appliedKey(groupID uint64) []byte   { return groupKey(groupID, spanReplica, keyApplied) }
func replicaIDKey(groupID uint64) []byte { return groupKey(groupID, spanIdentity, keyReplicaID) }
func tombstoneKey(groupID uint64) []byte { return groupKey(groupID, spanIdentity, keyTombstone) }

// replicaSpan returns [start, end) of the group's replica span.
func replicaSpan(groupID uint64) (start, end []byte) {
	start = append(appendGroupPrefix(nil, groupID), spanReplica)
	end = append(appendGroupPrefix(nil, groupID), spanReplica+1)
	return start, end
}

// appendLogKey appends the key of the entry at index to dst.
func appendLogKey(dst []byte, groupID, index uint64) []byte {
	dst = appendGroupPrefix(dst, groupID)
	dst = append(dst, spanReplica, keyLog)
	return binary.BigEndian.AppendUint64(dst, index)
}

func logKey(groupID, index uint64) []byte {
	return appendLogKey(make([]byte, 0, logKeyLen), groupID, index)
}

// logSpan returns [start, end) covering every log key of the group.
func logSpan(groupID uint64) (start, end []byte) {
	start = groupKey(groupID, spanReplica, keyLog)
	end = groupKey(groupID, spanReplica, keyLog+1)
	return start, end
}

// parseLogKey returns the index of a log key of the given group.
func parseLogKey(groupID uint64, key []byte) (uint64, error) {
	if len(key) != logKeyLen || key[0] != prefixGroup ||
		binary.BigEndian.Uint64(key[1:]) != groupID ||
		key[groupPrefixLen] != spanReplica || key[spanPrefixLen] != keyLog {
		return 0, fmt.Errorf("%w: %x is not a log key of group %d", ErrCorrupt, key, groupID)
	}
	return binary.BigEndian.Uint64(key[spanPrefixLen+1:]), nil
}

func stateSnapshotKey(groupID uint64, chunk uint32) []byte {
	k := groupKey(groupID, spanReplica, keyStateSnapshot)
	return binary.BigEndian.AppendUint32(k, chunk)
}

func stateSnapshotSpan(groupID uint64) (start, end []byte) {
	return groupKey(groupID, spanReplica, keyStateSnapshot), groupKey(groupID, spanReplica, keyStateSnapshot+1)
}

// appendDataKey appends the Pebble key of a state machine's user key.
func appendDataKey(dst []byte, groupID uint64, userKey []byte) []byte {
	dst = appendGroupPrefix(dst, groupID)
	dst = append(dst, spanReplica, keyData)
	return append(dst, userKey...)
}

// dataSpan returns [start, end) of the group's state machine data.
func dataSpan(groupID uint64) (start, end []byte) {
	return groupKey(groupID, spanReplica, keyData), groupKey(groupID, spanReplica, keyData+1)
}

const dataPrefixLen = spanPrefixLen + 1

// groupIDOf returns the group ID of a group key.
func groupIDOf(key []byte) (uint64, bool) {
	if len(key) < groupPrefixLen || key[0] != prefixGroup {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[1:]), true
}
