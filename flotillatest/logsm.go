package flotillatest

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/flotilla-io/flotilla/multiraft"
)

// LogSM is a test state machine that keeps every command it applied, in
// order, so replicas can be compared entry by entry. Its result for a
// command is the command's position in its log.
type LogSM struct {
	mu  sync.Mutex
	log [][]byte
	pos []multiraft.Command // position of each command (data not kept)
}

// Positions returns the log position of each applied command.
func (s *LogSM) Positions() []multiraft.Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]multiraft.Command(nil), s.pos...)
}

// Apply implements multiraft.StateMachine.
func (s *LogSM) Apply(cmds []multiraft.Command) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	results := make([][]byte, len(cmds))
	for i, c := range cmds {
		s.log = append(s.log, append([]byte(nil), c.Data...))
		s.pos = append(s.pos, multiraft.Command{Index: c.Index, Slot: c.Slot})
		results[i] = binary.BigEndian.AppendUint64(nil, uint64(len(s.log)))
	}
	return results, nil
}

// Snapshot implements multiraft.StateMachine.
func (s *LogSM) Snapshot(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(s.log)))
	for _, c := range s.log {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	_, err := w.Write(b)
	return err
}

// Restore implements multiraft.StateMachine.
func (s *LogSM) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return fmt.Errorf("logsm: bad snapshot")
	}
	b = b[k:]
	log := make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return fmt.Errorf("logsm: bad snapshot entry")
		}
		log = append(log, append([]byte(nil), b[k:k+int(l)]...))
		b = b[k+int(l):]
	}
	s.mu.Lock()
	s.log = log
	s.pos = make([]multiraft.Command, len(log)) // positions before a snapshot are not kept
	s.mu.Unlock()
	return nil
}

// Log returns a copy of the applied commands.
func (s *LogSM) Log() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.log...)
}

// Len returns how many commands were applied.
func (s *LogSM) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.log)
}
