package multiraft

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/transport"
)

// Node liveness.
//
// A host keeps one view of which peer nodes are live: a peer is live while
// anything from it (a frame of any group's traffic, or a liveness record,
// which the transport sends at a tick when nothing else went) arrived
// within the election timeout. Quiesced groups rely on it instead of
// ticking: a follower whose leader's node stops being live wakes and
// elects; a leader quiesces with followers on nodes that are not live, and
// the groups in which such a node lags are woken when it is live again.
// Every cost here is per peer (a frame notes its sender; a tick looks at
// each peer), except the rare transitions, which look at the groups.

// liveness is the host's view of its peers.
type liveness struct {
	h       *Host
	timeout int64        // ticks without news after which a peer is not live
	now     atomic.Int64 // the host's tick count

	// peers is copied on write (a new peer is rare), so that noting a
	// frame takes no lock.
	peers atomic.Pointer[map[uint64]*peerState]
	mu    sync.Mutex // serializes writers of peers; guards orphans
	// orphans are the followers of leader replicas that are gone from
	// this host (failed or removed) while it stays live: asked to wake at
	// every tick for a while (see group.wakeFollowers).
	orphans []orphan
}

// orphan is a gone leader replica's group, and until when its followers
// are asked to wake.
type orphan struct {
	group, replica uint64
	followers      map[uint64]uint64 // replica -> node
	until          int64
}

// maxOrphans bounds the orphan list (oldest dropped first).
const maxOrphans = 1 << 16

// peerState is one peer as the host sees it.
type peerState struct {
	heard atomic.Int64 // tick of the last frame from it
	live  atomic.Bool  // as of the last tick (set at once when first heard)
	// incarnation is the peer's current run; epoch counts the restarts
	// seen (a new incarnation), so that a group can tell whether its
	// leader's node restarted since it learned the leader.
	incarnation atomic.Uint64
	epoch       atomic.Uint64
}

func newLiveness(h *Host) *liveness {
	l := &liveness{h: h, timeout: int64(h.cfg.ElectionTicks)}
	l.peers.Store(&map[uint64]*peerState{})
	return l
}

// heard notes that a frame from node arrived, from its given incarnation
// (0: unknown).
func (l *liveness) heard(node, incarnation uint64) {
	p := (*l.peers.Load())[node]
	if p == nil {
		p = l.add(node, incarnation)
	}
	p.heard.Store(l.now.Load())
	if incarnation == 0 || p.incarnation.Load() == incarnation {
		return
	}
	l.mu.Lock()
	old := p.incarnation.Swap(incarnation)
	if old != 0 && old != incarnation {
		p.epoch.Add(1)
	}
	l.mu.Unlock()
	if old != 0 && old != incarnation {
		// The peer restarted within the election timeout: it knows no
		// leaders any more, and leads nothing. Its groups' followers here
		// elect; the groups led here tell its replicas who leads.
		l.h.log.Info("peer restarted", "peer", node)
		l.h.m.PeerTransitions.WithLabelValues(strconv.FormatUint(node, 10), "restarted").Inc()
		l.down(node)
		l.up(node)
	}
}

// add makes a peer first heard from: live from now on. Groups may have
// quiesced with a lagging replica on a node never heard from (one just
// added).
func (l *liveness) add(node, incarnation uint64) *peerState {
	l.mu.Lock()
	old := *l.peers.Load()
	if p := old[node]; p != nil { // added meanwhile
		l.mu.Unlock()
		return p
	}
	p := &peerState{}
	p.heard.Store(l.now.Load())
	p.incarnation.Store(incarnation)
	p.live.Store(true)
	next := make(map[uint64]*peerState, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[node] = p
	l.peers.Store(&next)
	l.mu.Unlock()
	label := strconv.FormatUint(node, 10)
	l.h.m.PeerLive.WithLabelValues(label).Set(1)
	for _, to := range []string{"live", "dead", "restarted"} {
		l.h.m.PeerTransitions.WithLabelValues(label, to)
	}
	l.up(node)
	return p
}

// epoch returns how many restarts of a node this host has seen.
func (l *liveness) epoch(node uint64) uint64 {
	if p := (*l.peers.Load())[node]; p != nil {
		return p.epoch.Load()
	}
	return 0
}

// isLive reports whether a node is live: this host always is; a peer is
// once heard from within the election timeout.
func (l *liveness) isLive(node uint64) bool {
	if node == uint64(l.h.cfg.NodeID) {
		return true
	}
	p := (*l.peers.Load())[node]
	return p != nil && p.live.Load()
}

// orphaned asks the followers of a leader replica that is gone from this
// host to wake, at every tick for two election timeouts.
func (l *liveness) orphaned(groupID, replica uint64, replicas map[uint64]uint64) {
	followers := make(map[uint64]uint64, len(replicas))
	for r, n := range replicas {
		if r != replica && n != uint64(l.h.cfg.NodeID) {
			followers[r] = n
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.orphans) >= maxOrphans {
		l.orphans = l.orphans[1:]
	}
	l.orphans = append(l.orphans, orphan{group: groupID, replica: replica, followers: followers, until: l.now.Load() + 2*l.timeout})
}

// wakeOrphans sends this tick's wake requests to orphaned followers.
func (l *liveness) wakeOrphans(now int64) {
	l.mu.Lock()
	if len(l.orphans) == 0 { // the usual tick: nothing to do, nothing made
		l.mu.Unlock()
		return
	}
	kept := l.orphans[:0]
	out := make(map[uint64][]transport.Envelope)
	for _, o := range l.orphans {
		if now > o.until {
			continue
		}
		kept = append(kept, o)
		for r, node := range o.followers {
			m := &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(o.replica), To: new(r)}
			out[node] = append(out[node], transport.Envelope{GroupID: o.group, Message: m, Wake: true})
		}
	}
	clear(l.orphans[len(kept):])
	l.orphans = kept
	l.mu.Unlock()
	for node, batch := range out {
		l.h.trans.Send(node, batch)
	}
}

// tick advances the host's clock and looks at each peer. It runs on the
// tick loop, before any group's tick: a transition wakes exactly the
// groups it concerns.
func (l *liveness) tick() {
	now := l.now.Add(1)
	l.wakeOrphans(now)
	for node, p := range *l.peers.Load() {
		live := now-p.heard.Load() <= l.timeout
		if p.live.Load() == live {
			continue
		}
		p.live.Store(live)
		label := strconv.FormatUint(node, 10)
		if live {
			l.h.m.PeerLive.WithLabelValues(label).Set(1)
			l.h.m.PeerTransitions.WithLabelValues(label, "live").Inc()
			l.h.log.Info("peer is live again", "peer", node)
			l.up(node)
		} else {
			l.h.m.PeerLive.WithLabelValues(label).Set(0)
			l.h.m.PeerTransitions.WithLabelValues(label, "dead").Inc()
			l.h.log.Warn("peer is not live: nothing heard from it within the election timeout", "peer", node,
				"timeout", time.Duration(l.timeout)*l.h.cfg.TickInterval)
			l.down(node)
		}
	}
}

// down wakes the groups a node that stopped being live concerns: those
// whose leader is there (their followers here elect), and quiesced groups
// led here with a replica there (a leader that lost a live quorum must
// wake to step down). Each group's pass decides.
func (l *liveness) down(node uint64) {
	self := uint64(l.h.cfg.NodeID)
	l.nudge(nudgeDown, func(g *group) bool {
		return g.leaderNode.Load() == node || (g.quiet.Load() && g.leaderNode.Load() == self && hasReplicaOn(g, node))
	})
}

// up nudges the quiesced groups led here with a replica on the node: a
// leader wakes if that replica lags, and otherwise tells it again that
// the group is quiesced (a restarted host's replicas know no leader, and
// a partitioned one's forgot it).
func (l *liveness) up(node uint64) {
	l.nudge(nudgeUp, func(g *group) bool {
		return g.quiet.Load() && g.leaderNode.Load() == uint64(l.h.cfg.NodeID) && hasReplicaOn(g, node)
	})
}

// hasReplicaOn reports whether the group's published status puts a
// replica on the node.
func hasReplicaOn(g *group, node uint64) bool {
	for _, n := range g.status.Load().Replicas {
		if uint64(n) == node {
			return true
		}
	}
	return false
}

// Why a group was nudged.
const (
	nudgeDown uint32 = 1 << iota // a node stopped being live, or restarted
	nudgeUp                      // a node is live again, or restarted
)

// nudge makes every group that want picks look at liveness at its next
// pass. A node that stopped being live is the failure detector's news:
// its groups are processed ahead of data (a follower waiting in the
// normal lane behind a busy host's appends would wait that long to elect).
func (l *liveness) nudge(why uint32, want func(g *group) bool) {
	var ids []uint64
	l.h.groups.RLock()
	for _, g := range l.h.groups.m {
		if want(g) {
			g.nudged.Or(why)
			ids = append(ids, g.id)
		}
	}
	l.h.groups.RUnlock()
	if why == nudgeDown {
		l.h.sched.EnqueueUrgent(ids, scheduler.Requests)
		return
	}
	l.h.sched.EnqueueMany(ids, scheduler.Requests)
}
