package multiraft_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/transport"
)

// kv is a user's in-memory key-value state machine: commands are
// "key=value". The host calls Apply, Snapshot and Restore on the group's
// worker, and runs Read's functions there too, so kv needs no lock of its
// own as long as it is read only through Read or StaleRead.
type kv struct{ m map[string]string }

func (s *kv) Apply(cmds []multiraft.Command) ([][]byte, error) {
	results := make([][]byte, len(cmds))
	for i, c := range cmds {
		k, v, ok := strings.Cut(string(c.Data), "=")
		if !ok {
			results[i] = []byte("bad command") // deterministic: every replica says the same
			continue
		}
		s.m[k] = v
	}
	return results, nil
}

func (s *kv) Snapshot(w io.Writer) error {
	for _, k := range slices.Sorted(maps.Keys(s.m)) {
		if _, err := fmt.Fprintf(w, "%s=%s\n", k, s.m[k]); err != nil {
			return err
		}
	}
	return nil
}

func (s *kv) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m = map[string]string{}
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		s.m[k] = v
	}
	return nil
}

// node is one host of the example's cluster and the state machines it made.
type node struct {
	h   *multiraft.Host
	mu  sync.Mutex
	sms map[multiraft.GroupID]*kv
}

// seen is a leadership change or a removal, as one node's host saw it.
type seen struct {
	n       *node // the host incarnation that saw it
	l       multiraft.LeaderInfo
	removed bool
}

// startNode starts host id on its own in-memory disk (a directory on a
// real one), over an in-memory network (transport.NewGRPC between
// processes), its metrics on the shared registry, its events on events.
func startNode(id multiraft.NodeID, fs vfs.FS, net *transport.Network, reg prometheus.Registerer, events chan<- seen) (*node, error) {
	n := &node{sms: map[multiraft.GroupID]*kv{}}
	cfg := multiraft.DefaultConfig()
	cfg.ClusterID, cfg.NodeID = 1, id
	cfg.Dir, cfg.FS = "data", fs
	cfg.Transport = transport.NewMemory(net, uint64(id), transport.Config{})
	cfg.StateMachine = func(g multiraft.GroupID) multiraft.StateMachine {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.sms[g] = &kv{m: map[string]string{}}
		return n.sms[g]
	}
	cfg.TickInterval = 10 * time.Millisecond // fast elections for the example
	cfg.MemTableSize = 4 << 20
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.DiscardHandler)
	// The callbacks run on the host's workers: they must not block.
	cfg.Events.LeaderChanged = func(l multiraft.LeaderInfo) {
		select {
		case events <- seen{n: n, l: l}:
		default:
		}
	}
	cfg.Events.GroupRemoved = func(multiraft.GroupID) {
		select {
		case events <- seen{n: n, removed: true}:
		default:
		}
	}
	h, err := multiraft.NewHost(cfg)
	n.h = h
	return n, err
}

func (n *node) sm(g multiraft.GroupID) *kv {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sms[g]
}

// eventLog keeps the events the hosts sent, so a wait can find one that
// came before it began.
type eventLog struct {
	ch   chan seen
	past []seen
}

// await returns the first event, past or to come, that matches.
func (l *eventLog) await(ctx context.Context, match func(seen) bool) seen {
	for _, e := range l.past {
		if match(e) {
			return e
		}
	}
	for {
		select {
		case e := <-l.ch:
			l.past = append(l.past, e)
			if match(e) {
				return e
			}
		case <-ctx.Done():
			panic(ctx.Err())
		}
	}
}

// Example: three hosts in one process (a broker's test rig, or how
// Flotilla's own tests run), a user state machine, and what a broker does
// with a partition's group: propose, read, transfer the leadership, add and
// remove a replica in one call, and restart a host from its directory.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	net := transport.NewNetwork()
	reg := prometheus.NewRegistry() // every host's series, labelled node=<id>
	disks := map[multiraft.NodeID]vfs.FS{}
	nodes := map[multiraft.NodeID]*node{}
	events := &eventLog{ch: make(chan seen, 256)} // the hosts' events, waited on instead of polled
	for id := multiraft.NodeID(1); id <= 4; id++ {
		disks[id] = vfs.NewMem()
		n, err := startNode(id, disks[id], net, reg, events.ch)
		if err != nil {
			panic(err)
		}
		nodes[id] = n
		defer func() { _ = nodes[id].h.Close() }()
	}

	// A group (a partition) on nodes 1, 2 and 3: each founding member
	// creates its replica.
	const g = multiraft.GroupID(7)
	for id := multiraft.NodeID(1); id <= 3; id++ {
		if err := nodes[id].h.CreateGroup(g, []multiraft.NodeID{1, 2, 3}); err != nil {
			panic(err)
		}
	}
	// A host announces its leadership once it serves (it has applied an
	// entry of its term).
	l := nodes[events.await(ctx, func(e seen) bool { return e.l.Local }).l.Leader]

	// Propose on the leader: it returns once the command applied there.
	for _, cmd := range []string{"color=blue", "size=9"} {
		if _, err := l.h.Propose(ctx, g, []byte(cmd)); err != nil {
			panic(err)
		}
	}

	// A linearizable read, here on a follower: it sees both writes.
	follower := nodes[1]
	if follower == l {
		follower = nodes[2]
	}
	events.await(ctx, func(e seen) bool { return e.n == follower && e.l.Leader == l.h.NodeID() }) // it knows its leader
	var color string
	err := follower.h.Read(ctx, g, func() error {
		color = follower.sm(g).m["color"]
		return nil
	})
	fmt.Println("read on a follower:", color, err)

	// Move the leadership to another node.
	to := multiraft.NodeID(3)
	if l.h.NodeID() == to {
		to = 2
	}
	if err := l.h.TransferLeadership(ctx, g, to); err != nil {
		panic(err)
	}
	events.await(ctx, func(e seen) bool { return e.l.Local && e.l.Leader == to })
	l = nodes[to]
	fmt.Println("the transfer's target leads")

	// Add a voter on node 4 in one call from the leader, then remove the
	// replica on node 1 (it deletes itself).
	if _, err := l.h.AddReplica(ctx, g, 4, multiraft.AddVoter); err != nil {
		panic(err)
	}
	if _, err := l.h.ChangeMembership(ctx, g, multiraft.Change{Type: multiraft.RemoveReplica, Node: 1}); err != nil {
		panic(err)
	}
	events.await(ctx, func(e seen) bool { return e.removed && e.n == nodes[1] })
	st, _ := l.h.Status(g)
	fmt.Println("replicas on nodes:", slices.Sorted(maps.Values(st.Replicas)))

	// Restart node 4 from its directory: its replica comes back with the
	// state it applied, and catches up with the write it missed while down.
	if err := nodes[4].h.Close(); err != nil {
		panic(err)
	}
	if _, err := l.h.Propose(ctx, g, []byte("size=10")); err != nil {
		panic(err)
	}
	if nodes[4], err = startNode(4, disks[4], net, reg, events.ch); err != nil {
		panic(err)
	}
	// Once it hears from its leader, a linearizable read there sees the
	// write it missed.
	events.await(ctx, func(e seen) bool { return e.n == nodes[4] && e.l.Leader == l.h.NodeID() })
	var size string
	err = nodes[4].h.Read(ctx, g, func() error { size = nodes[4].sm(g).m["size"]; return nil })
	fmt.Println("size on the restarted node:", size, err)

	// Metrics: one registry, every host's series.
	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() == "flotilla_host_groups" {
			var per bytes.Buffer
			for _, m := range f.GetMetric() {
				fmt.Fprintf(&per, "node %s: %v; ", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue())
			}
			fmt.Println("groups per host:", strings.TrimSuffix(per.String(), "; "))
		}
	}
	// Output:
	// read on a follower: blue <nil>
	// the transfer's target leads
	// replicas on nodes: [2 3 4]
	// size on the restarted node: 10 <nil>
	// groups per host: node 1: 0; node 2: 1; node 3: 1; node 4: 1
}
