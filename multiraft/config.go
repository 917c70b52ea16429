package multiraft

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/clock"
	"github.com/flotilla-io/flotilla/transport"
)

// Clock is the host's time source (package clock): the wall clock by
// default; tests pass a *ManualClock.
type Clock = clock.Clock

// ManualClock is a Clock that moves only when advanced (clock.Manual: its
// Advance fires the host's ticks): tests drive a host's time with it
// instead of the wall clock's.
type ManualClock = clock.Manual

// NewManualClock returns a manual clock set to start.
func NewManualClock(start time.Time) *ManualClock { return clock.NewManual(start) }

// Config configures a Host. Start from DefaultConfig.
type Config struct {
	// ClusterID names the cluster; hosts of different clusters refuse each
	// other's traffic. Required.
	ClusterID uint64
	// NodeID is this host's ID in the cluster. Required, not 0.
	NodeID NodeID

	// Dir is the data directory inside FS. Required.
	Dir string
	// FS is the filesystem for all storage I/O. Default vfs.Default.
	FS vfs.FS
	// Transport carries Raft traffic to peers. Required.
	Transport transport.Transport
	// StateMachine makes each group's in-memory state machine. Exactly one
	// of StateMachine and DiskStateMachine is required.
	StateMachine StateMachineFactory
	// DiskStateMachine makes each group's on-disk state machine.
	DiskStateMachine DiskStateMachineFactory

	// Clock drives ticks and timeouts. Default the wall clock.
	Clock Clock
	// TickInterval is the period of the host's one tick loop. Default 100 ms.
	TickInterval time.Duration
	// ElectionTicks is the election timeout in ticks. Default 10.
	ElectionTicks int
	// HeartbeatTicks is the heartbeat interval in ticks. Default 1.
	HeartbeatTicks int
	// Workers is the scheduler's pool size. Default 2 x GOMAXPROCS.
	Workers int
	// DisableQuiescence keeps every group ticking and heartbeating even
	// when idle. Quiescence (on by default) is what lets a host keep
	// thousands of idle groups at no cost; see quiesce.go.
	DisableQuiescence bool

	// MaxSizePerMsg bounds the entries of one append message. Default 1 MiB.
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds in-flight append messages per follower. Default 256.
	MaxInflightMsgs int
	// MaxInflightBytes bounds in-flight append bytes per follower. Default 8 MiB.
	MaxInflightBytes uint64
	// MaxUncommittedEntriesSize bounds a leader's uncommitted log tail;
	// proposals beyond it are refused (ErrBusy). Default 16 MiB.
	MaxUncommittedEntriesSize uint64
	// MaxCommittedSizePerReady bounds the entries applied per Ready. Default 16 MiB.
	MaxCommittedSizePerReady uint64

	// MaxProposalBytes bounds one proposal's data. Default 1 MiB.
	MaxProposalBytes int
	// MaxGroupProposals bounds a group's queued proposals. Default 4096.
	MaxGroupProposals int
	// ProposalBudgetBytes bounds the bytes of queued and pending proposals
	// of the whole host. Default 256 MiB.
	ProposalBudgetBytes int64
	// MaxProposalsInFlight bounds the proposals a host holds at once
	// (queued, or handed to raft and not yet answered), for all its
	// groups: admission control. Beyond it Propose fails at once with a
	// *BusyError (ErrBusy) saying when to retry. The bound keeps the time
	// a proposal waits inside the host well within the election timeout
	// under any offered load, so that an overloaded host still ticks,
	// heartbeats and keeps its leaders; callers queue, not the host.
	// Default 4096: on 2 cores the three hosts of a cluster then commit
	// at full speed with 10,000 concurrent proposers.
	MaxProposalsInFlight int
	// MaxGroupInbox bounds a group's queued inbound messages; beyond it
	// messages are dropped (raft retransmits). Default 4096.
	MaxGroupInbox int
	// InboxBudgetBytes bounds the bytes of inbound messages queued in all
	// groups, and of refused appends waiting for the log writer. The
	// failure detector's messages (heartbeats, votes and their answers)
	// have a budget of their own besides, an eighth of it, that data never
	// takes. Default 256 MiB.
	InboxBudgetBytes int64

	// SnapshotStagingBytes bounds the disk space of snapshots being
	// received or waiting to be installed, all groups together: a
	// snapshot whose announced size does not fit is refused before any of
	// it moves (the sender retries later). Default 8 GiB.
	SnapshotStagingBytes int64

	// SnapshotEntries is how many entries a group applies between durable
	// snapshots of its state machine; after each, the log is truncated.
	// Default 10,000.
	SnapshotEntries uint64
	// LogTailEntries is how many entries below a durable snapshot the log
	// keeps for followers that lag a little (further behind, they get a
	// snapshot). Default 1,000.
	LogTailEntries uint64

	// EntryCacheBytes is the store's entry cache budget. Default 64 MiB.
	EntryCacheBytes int64
	// LogQueueBytes bounds the bytes of appends waiting for the log writer,
	// all groups together. Beyond it a group's appends wait in its own
	// backlog (charged to InboxBudgetBytes) and are offered again on its
	// next pass: a disk that cannot keep up delays the groups, never fails
	// the host. Default 64 MiB.
	LogQueueBytes int64
	// MemTableSize is Pebble's memtable size (each WAL is preallocated near
	// it). Default 64 MiB.
	MemTableSize uint64
	// DiskStallThreshold fails the host when a disk write or sync takes
	// longer. Default 20 s.
	DiskStallThreshold time.Duration
	// MinFreeDiskBytes is the space alarm's threshold: with less free
	// space on the data directory's disk (FS.GetDiskUsage), new proposals
	// and replicas are refused with ErrNoSpace until there is an eighth
	// more again (see space.go). It must cover what can be written
	// between two checks, a WAL's preallocation and a memtable flush.
	// Default 4 x MemTableSize, at least 64 MiB; negative disables it.
	MinFreeDiskBytes int64
	// DiskCheckInterval is how often the free space is read. Default
	// TickInterval.
	DiskCheckInterval time.Duration

	// Logger receives the host's messages, the store's, Pebble's and the
	// transport's (unless its own config set one). Default slog.Default().
	// Pebble's routine lines (WAL replays, flushes) come at INFO, and raft's
	// at INFO and WARN (such as a replica that "cannot campaign" while a
	// membership change is applied: raft waits, nothing is wrong): a logger
	// at WARN keeps a host quiet.
	Logger *slog.Logger
	// Registerer receives the host's metrics, the transport's included
	// (unless its own config set them), each series labelled
	// node=<NodeID>, so the hosts of one process can share a registry
	// (pass the registry itself, not one already wrapped with a node
	// label); Close unregisters them. A host already registered there is
	// ErrInvalid. Default: none (unregistered).
	Registerer prometheus.Registerer
	// Events receives leadership and lifecycle events.
	Events EventListener

	// testing holds hooks only tests set (export_test.go).
	testing testHooks
}

// testHooks let tests inject faults where no input can reach.
type testHooks struct {
	// beforeStep, if set, runs before a group steps an inbound message.
	beforeStep func(groupID uint64, m *pb.Message)
	// logQueueItems, if set, bounds the log writer's queue in items.
	logQueueItems int
}

// DefaultConfig returns the defaults; the caller sets the required fields.
func DefaultConfig() Config {
	return Config{
		TickInterval:              100 * time.Millisecond,
		ElectionTicks:             10,
		HeartbeatTicks:            1,
		Workers:                   2 * runtime.GOMAXPROCS(0),
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           256,
		MaxInflightBytes:          8 << 20,
		MaxUncommittedEntriesSize: 16 << 20,
		MaxCommittedSizePerReady:  16 << 20,
		MaxProposalBytes:          1 << 20,
		MaxGroupProposals:         4096,
		ProposalBudgetBytes:       256 << 20,
		MaxProposalsInFlight:      4096,
		MaxGroupInbox:             4096,
		InboxBudgetBytes:          256 << 20,
		SnapshotStagingBytes:      8 << 30,
		SnapshotEntries:           10000,
		LogTailEntries:            1000,
		EntryCacheBytes:           64 << 20,
		LogQueueBytes:             64 << 20,
		MemTableSize:              64 << 20,
		DiskStallThreshold:        20 * time.Second,
	}
}

// Validate fills the defaults of unset fields and rejects missing or
// unsafe settings.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == 0:
		return fmt.Errorf("%w: Config.NodeID is required", ErrInvalid)
	case c.ClusterID == 0:
		return fmt.Errorf("%w: Config.ClusterID is required", ErrInvalid)
	case c.Dir == "":
		return fmt.Errorf("%w: Config.Dir is required", ErrInvalid)
	case c.Transport == nil:
		return fmt.Errorf("%w: Config.Transport is required", ErrInvalid)
	case (c.StateMachine == nil) == (c.DiskStateMachine == nil):
		return fmt.Errorf("%w: exactly one of Config.StateMachine and Config.DiskStateMachine is required", ErrInvalid)
	}
	d := DefaultConfig()
	fill(&c.TickInterval, d.TickInterval)
	fill(&c.ElectionTicks, d.ElectionTicks)
	fill(&c.HeartbeatTicks, d.HeartbeatTicks)
	fill(&c.Workers, d.Workers)
	fill(&c.MaxSizePerMsg, d.MaxSizePerMsg)
	fill(&c.MaxInflightMsgs, d.MaxInflightMsgs)
	fill(&c.MaxInflightBytes, d.MaxInflightBytes)
	fill(&c.MaxUncommittedEntriesSize, d.MaxUncommittedEntriesSize)
	fill(&c.MaxCommittedSizePerReady, d.MaxCommittedSizePerReady)
	fill(&c.MaxProposalBytes, d.MaxProposalBytes)
	fill(&c.MaxGroupProposals, d.MaxGroupProposals)
	fill(&c.ProposalBudgetBytes, d.ProposalBudgetBytes)
	fill(&c.MaxProposalsInFlight, d.MaxProposalsInFlight)
	fill(&c.MaxGroupInbox, d.MaxGroupInbox)
	fill(&c.InboxBudgetBytes, d.InboxBudgetBytes)
	fill(&c.SnapshotStagingBytes, d.SnapshotStagingBytes)
	fill(&c.SnapshotEntries, d.SnapshotEntries)
	fill(&c.LogTailEntries, d.LogTailEntries)
	fill(&c.EntryCacheBytes, d.EntryCacheBytes)
	fill(&c.LogQueueBytes, d.LogQueueBytes)
	fill(&c.MemTableSize, d.MemTableSize)
	fill(&c.DiskStallThreshold, d.DiskStallThreshold)
	fill(&c.MinFreeDiskBytes, max(64<<20, 4*int64(c.MemTableSize)))
	fill(&c.DiskCheckInterval, c.TickInterval)
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Events.fill()
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"TickInterval", int64(c.TickInterval)}, {"ElectionTicks", int64(c.ElectionTicks)},
		{"HeartbeatTicks", int64(c.HeartbeatTicks)}, {"Workers", int64(c.Workers)},
		{"MaxInflightMsgs", int64(c.MaxInflightMsgs)}, {"MaxProposalBytes", int64(c.MaxProposalBytes)},
		{"MaxGroupProposals", int64(c.MaxGroupProposals)}, {"ProposalBudgetBytes", c.ProposalBudgetBytes},
		{"MaxProposalsInFlight", int64(c.MaxProposalsInFlight)},
		{"MaxGroupInbox", int64(c.MaxGroupInbox)}, {"InboxBudgetBytes", c.InboxBudgetBytes}, {"SnapshotStagingBytes", c.SnapshotStagingBytes},
		{"EntryCacheBytes", c.EntryCacheBytes}, {"LogQueueBytes", c.LogQueueBytes},
		{"DiskStallThreshold", int64(c.DiskStallThreshold)}, {"DiskCheckInterval", int64(c.DiskCheckInterval)},
	} {
		if f.value < 0 {
			return fmt.Errorf("%w: Config.%s %d is negative", ErrInvalid, f.name, f.value)
		}
	}
	// What raft itself would refuse, or panic on, when a group is made.
	switch {
	case c.ElectionTicks <= c.HeartbeatTicks:
		return fmt.Errorf("%w: Config.ElectionTicks %d must exceed HeartbeatTicks %d", ErrInvalid, c.ElectionTicks, c.HeartbeatTicks)
	case c.MaxInflightBytes < c.MaxSizePerMsg:
		return fmt.Errorf("%w: Config.MaxInflightBytes %d is below MaxSizePerMsg %d: not one full message could be in flight",
			ErrInvalid, c.MaxInflightBytes, c.MaxSizePerMsg)
	case uint64(c.MaxProposalBytes) > c.MaxUncommittedEntriesSize:
		return fmt.Errorf("%w: Config.MaxProposalBytes %d is above MaxUncommittedEntriesSize %d", ErrInvalid,
			c.MaxProposalBytes, c.MaxUncommittedEntriesSize)
	}
	return nil
}

func fill[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
