package store

import (
	"encoding/binary"
	"testing"
)

// TestStagedTableWithinAnnouncedSize: the host reserves a snapshot's
// announced stream size from SnapshotStagingBytes ("the disk space of
// snapshots being received"); the staged table must not take more disk
// than the stream that filled it. Many small records (the 'k' record of a
// 4-byte key and a 1-byte value is 8 bytes on the stream) make a table
// larger than the stream.
func TestStagedTableWithinAnnouncedSize(t *testing.T) {
	s := newMemStore(t)
	g := createGroup(t, s, 1, 1)
	st, err := g.StageSnapshot(1 << 40)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Discard()
	var stream int64
	var x uint64 = 88172645463325252
	for i := range 200000 {
		key := binary.BigEndian.AppendUint32(nil, uint32(i))
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		value := []byte{byte(x)}
		stream += int64(1 + 1 + len(key) + 1 + len(value)) // as diskMachine.snapshot writes it
		if err := st.Put(key, value); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Finish(); err != nil {
		t.Fatal(err)
	}
	if st.Size() > stream {
		t.Fatalf("a %d-byte stream staged a %d-byte table (%.1fx): the reservation undercounts the disk it takes",
			stream, st.Size(), float64(st.Size())/float64(stream))
	}
}
