// Package flotillatest is a test kit for code that embeds Flotilla: it
// starts N multiraft hosts in one test process with the caller's state
// machines (or the kit's own recording ones), on crashable in-memory disks
// (or real ones), over the in-memory transport or real gRPC on 127.0.0.1,
// all driven by one manual clock.
//
//	c := flotillatest.NewCluster(t, flotillatest.Config{Nodes: 3,
//		StateMachine: func(node flotillatest.NodeID, g flotillatest.GroupID) multiraft.StateMachine { return newKV() }})
//	c.CreateGroup(1, 1, 2, 3)
//	c.WaitLeaders([]flotillatest.GroupID{1})
//	err := c.Do("a write", func(ctx context.Context) error {
//		_, err := c.Host(c.Leader(1)).Propose(ctx, 1, cmd)
//		return err
//	})
//
// Time moves only when the test says: WaitFor and Do advance the clock a
// tick at a time, and only while every host is quiet, so a slow machine
// (the race detector, a loaded CI box) never sees spurious elections;
// TickUntil moves it regardless, for waits while a disk is held.
//
// Faults: Isolate and the Net's filters (transport.Isolate, DropType,
// DelayAll, ...) cut or delay traffic on either transport; HoldSyncs,
// FailSyncs and NoSpace act on a node's disk; SetFreeSpace feeds the space
// alarm; Crash cuts the power (keeping what was synced and a random share
// of the rest) and Restart brings the node back on what its disk kept.
//
// The kit registers no flags and no global state; each cluster closes
// with its test. It needs of its caller only TB (a *testing.T has it), so
// a program can run a cluster outside a test too (Example).
package flotillatest
