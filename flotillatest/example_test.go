package flotillatest_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/flotilla-io/flotilla/flotillatest"
	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// run is a flotillatest.TB for a program (here, an example) that runs a
// cluster outside a test: in a test, pass its *testing.T.
type run struct {
	ctx      context.Context
	cleanups []func()
}

func (*run) Helper()                           {}
func (*run) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (*run) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (*run) Errorf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (r *run) Cleanup(fn func())               { r.cleanups = append(r.cleanups, fn) }
func (r *run) TempDir() string {
	d, err := os.MkdirTemp("", "kit")
	if err != nil {
		panic(err)
	}
	r.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}
func (r *run) Context() context.Context { return r.ctx }
func (r *run) done() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// Example: the test kit, as a broker's own tests use it (with t for r): three
// hosts on one manual clock with the kit's recording state machine, a
// write, a partitioned follower that misses the next one, and its catch-up
// once healed.
func Example() {
	r := &run{ctx: context.Background()}
	defer r.done()
	c := flotillatest.NewCluster(r, flotillatest.Config{Nodes: 3})
	c.CreateGroup(1, 1, 2, 3)
	c.WaitLeaders([]multiraft.GroupID{1})
	write := func(data string) {
		err := c.Do("a write", func(ctx context.Context) error { // moves the clock while it waits
			_, err := c.Host(c.Leader(1)).Propose(ctx, 1, []byte(data))
			return err
		})
		if err != nil {
			panic(err)
		}
	}
	write("a")
	follower := multiraft.NodeID(1)
	if follower == c.Leader(1) {
		follower = 2
	}
	heal := c.Net.AddFilter(transport.Isolate(uint64(follower))) // a fault: cut it off
	write("b")
	fmt.Println("cut-off follower holds", c.SM(follower, 1).Len(), "command")
	heal()
	c.WaitFor("the follower to catch up", time.Minute, func() bool { return c.SM(follower, 1).Len() == 2 })
	fmt.Println("healed follower holds", c.SM(follower, 1).Len(), "commands")
	// Output:
	// cut-off follower holds 1 command
	// healed follower holds 2 commands
}
