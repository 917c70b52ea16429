package flotillatest

import (
	"encoding/binary"
	"fmt"

	"github.com/flotilla-io/flotilla/multiraft"
)

// DiskLogSM is LogSM's on-disk twin: it keeps every applied command in
// the host's Pebble, under "l" + sequence number, with its position, and
// the count under "n". Reads go through the host's Reader, so the harness
// can compare replicas the same way for both kinds.
type DiskLogSM struct {
	r multiraft.Reader
}

var countKey = []byte("n")

func logKey(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte("l"), n) }

// Apply implements multiraft.DiskStateMachine.
func (s *DiskLogSM) Apply(w multiraft.Writer, cmds []multiraft.Command) ([][]byte, error) {
	n, err := s.count()
	if err != nil {
		return nil, err
	}
	results := make([][]byte, len(cmds))
	for i, c := range cmds {
		n++
		v := binary.BigEndian.AppendUint64(nil, c.Index)
		v = binary.BigEndian.AppendUint32(v, uint32(c.Slot))
		w.Set(logKey(n), append(v, c.Data...))
		results[i] = binary.BigEndian.AppendUint64(nil, n)
	}
	w.Set(countKey, binary.BigEndian.AppendUint64(nil, n))
	return results, nil
}

func (s *DiskLogSM) count() (uint64, error) {
	v, ok, err := s.r.Get(countKey)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("disklogsm: bad count")
	}
	return binary.BigEndian.Uint64(v), nil
}

func (s *DiskLogSM) scan(fn func(pos multiraft.Command, data []byte)) {
	_ = s.r.Scan([]byte("l"), []byte("m"), func(_, v []byte) bool {
		if len(v) >= 12 {
			fn(multiraft.Command{Index: binary.BigEndian.Uint64(v), Slot: int(binary.BigEndian.Uint32(v[8:]))}, append([]byte(nil), v[12:]...))
		}
		return true
	})
}

// Log returns the applied commands in order.
func (s *DiskLogSM) Log() [][]byte {
	var out [][]byte
	s.scan(func(_ multiraft.Command, d []byte) { out = append(out, d) })
	return out
}

// Positions returns each applied command's log position.
func (s *DiskLogSM) Positions() []multiraft.Command {
	var out []multiraft.Command
	s.scan(func(p multiraft.Command, _ []byte) { out = append(out, p) })
	return out
}

// Len returns how many commands were applied.
func (s *DiskLogSM) Len() int {
	n, _ := s.count()
	return int(n)
}
