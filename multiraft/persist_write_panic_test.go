package multiraft_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
)

// panicWriteSM is a Snapshotter whose write panics (a bug in the
// embedder's code, as a panicking Apply or Snapshot is).
type panicWriteSM struct{ n int }

func (s *panicWriteSM) Apply(cmds []multiraft.Command) ([][]byte, error) {
	s.n += len(cmds)
	return make([][]byte, len(cmds)), nil
}
func (s *panicWriteSM) Snapshot(io.Writer) error { return fmt.Errorf("not called") }
func (s *panicWriteSM) Restore(io.Reader) error  { return nil }
func (s *panicWriteSM) PrepareSnapshot(multiraft.SnapshotMeta) (func(io.Writer) error, error) {
	return func(io.Writer) error { panic("a Snapshotter's write panics") }, nil
}

// TestSnapshotterWritePanicFailsTheGroup (from a review): a panic in a
// Snapshotter's write, which runs off the worker (on a goroutine of its
// own, or on the transport's sending goroutine for a follower), fails the
// group alone, as a panic in Apply does: the process goes on. The
// scenario runs in a child process, whose end the parent checks.
func TestSnapshotterWritePanicFailsTheGroup(t *testing.T) {
	if os.Getenv("REVIEW17_CHILD") == "1" {
		c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 1,
			Configure:    func(cfg *multiraft.Config) { cfg.SnapshotEntries = 1 << 40 },
			StateMachine: func(multiraft.NodeID, multiraft.GroupID) multiraft.StateMachine { return &panicWriteSM{} }})
		const g = multiraft.GroupID(1)
		c.CreateGroup(g, 1)
		c.WaitLeaders([]multiraft.GroupID{g})
		propose(t, c, g, "x")
		_, err := c.Host(1).Snapshot(t.Context(), g)
		t.Logf("Snapshot: %v", err) // any error is fine: the process lived
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSnapshotterWritePanicFailsTheGroup$", "-test.v", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), "REVIEW17_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "a Snapshotter's write panics") {
		t.Fatalf("a panic in a Snapshotter's write killed the process (%v):\n%s", err, firstLines(string(out), 12))
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
