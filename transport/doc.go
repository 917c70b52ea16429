// Package transport carries Raft messages between the hosts of a cluster.
//
// # The seam
//
// Transport is what a host needs: Send hands a batch of messages of many
// groups to a peer node without ever blocking the caller (a full queue, or
// a peer known to be down, drops and reports the drop through
// Handler.HandleUnreachable, so raft learns the peer is unreachable);
// SendSnapshot streams a snapshot's data to a peer and reports the
// outcome, so the host can call ReportSnapshot with success or failure
// every time; Admin carries host-to-host control calls; Flush sends the
// heartbeats held for the tick. Inbound traffic reaches the host through
// its Handler, which must not block: it queues and returns.
//
// # The core both transports share (core.go, outbox.go, frame.go, wire.go)
//
// Each peer has one queue in two lanes, and each lane has its own sender
// goroutine and its own stream to the peer (two streams on one
// connection), draining the lane into frames (bounded in messages and
// bytes) that carry the messages of every group for that peer. The
// control lane holds the failure detector's messages (heartbeats and
// their responses, votes, pre-votes and theirs, timeout-now) and the
// liveness records, under a bound of its own; the data lane holds the
// rest, bounded in messages and bytes. So a heartbeat or a vote never
// waits behind appends: not in the queue, not in a frame, not behind a
// data frame the peer's flow control holds back (HTTP/2 interleaves the
// two streams); and an overloaded data lane drops appends, which raft
// resends, never the heartbeats whose loss would end in elections. The
// failure detector's messages may therefore overtake a group's appends,
// and appends may overtake them, which Raft tolerates: a heartbeat's
// commit never exceeds what the follower acknowledged, a vote from a
// newer term makes older appends stale, and timeout-now follows the
// transferee's acknowledgement. Within a lane, two messages of one group
// to one peer stay in order (the receiver delivers a frame's heartbeat
// records before its other messages, so a heartbeat may overtake a vote
// of the same frame).
//
// Heartbeats and heartbeat responses are coalesced: each becomes a small
// record (group, from, to, term, commit, context, and the quiesce flag
// with which a leader quiesces an idle group, or the wake flag of a
// request to wake one) in its frame, and plain ones (without a ReadIndex
// context) do not wake the sender. They wait for
// the host's tick, which calls Flush before it ticks any group: each tick
// sends exactly the heartbeats and responses of the tick before, in one
// frame per peer, whatever the number of groups. A heartbeat with a
// ReadIndex context, or any other control message, wakes the control
// lane's sender, and whatever heartbeats wait ride along. Two heartbeats
// of a group are never merged.
//
// Liveness. Every frame carries its sender's incarnation (a number drawn
// when the host starts) and tells the receiving host, through
// Handler.HandleAlive, that its sender is alive in that incarnation; a
// flush that finds nothing to send to a peer that nothing went to since
// the last flush sends a liveness record, a frame with nothing else in
// it. An idle host thus sends one small frame per peer per tick, and a
// host sees any peer it hears from at least once a tick, whatever the
// groups do. A peer first heard from gets a queue and sender too, so
// liveness flows both ways.
//
// A failed send reports the frame and everything queued behind it in its
// lane unreachable and marks the lane down: until its next successful
// dial, after an exponential backoff with jitter capped by
// Config.MaxBackoff, messages for it are dropped at once and reported.
//
// # The wire (wire.go, codec.go)
//
// A frame is peer.proto's Frame, but encoded and decoded by hand rather
// than by reflection: raftpb's proto2 messages have a pointer per field,
// and the generic path cost a fifth of a busy host's CPU. The framer sizes
// each record once, exactly (so frame bounds are exact), and encodes the
// frame once into a pooled buffer that gRPC returns to the pool when it is
// on the wire; the receiver decodes a frame with one allocation per
// message and copies each message's entry data out of the frame (a cached
// entry must not keep a whole frame alive). Raft
// streams name the "flotilla-frame" content subtype, whose gRPC codec
// passes the encoded frames through; a peer on the standard protobuf codec
// is understood too. Seeded tests check both directions against the
// standard protobuf encoding.
//
// Inbound frames are checked record by record: a message with no group,
// no sender or receiver, an unknown type, a type raft keeps local, or a
// MsgSnap outside a snapshot stream is dropped and counted, never stepped.
// Fault-injection Filters (tests) act on both ends: drops at the sender
// (so a node cut off sends nothing from that moment, even over TCP) and at
// the receiver, delays at the receiver.
//
// # Implementations
//
// Memory (memory.go) connects the hosts of one process through a Network,
// through the same core; each frame is encoded and decoded as over gRPC,
// so every in-memory cluster test runs the wire code too.
//
// GRPC (grpc.go, grpc_snapshot.go, tls.go) is the production transport:
// each host opens two long-lived client streams of frames to each peer,
// one per lane, on one connection (so a pair of nodes has two streams per
// direction, and responses travel on the other node's streams). The first frame's handshake names the cluster,
// both nodes and the peer protocol's version (ProtocolVersion); a wrong
// cluster, receiver or version is refused, counted and logged, so a node
// of another version refuses clearly rather than misreads.
// Snapshots travel on their own streams in chunks with a CRC-32C,
// throttled by one rate limiter per host and bounded in concurrent sends
// and receives; the receiver's reader reaches EOF only once the last chunk
// checked out, so a broken stream is never taken as a snapshot. Admin
// calls are unary RPCs on the same connection. With TLSConfig, all peer
// traffic is mutual TLS, and a peer is accepted only if its certificate
// names the node it claims as a URI SAN flotilla://<cluster>/node/<node>.
//
// # Goroutines
//
// One sender per peer, one per snapshot in flight (two for Memory), the
// gRPC server's and connections' own, and one timer per delayed message
// under a delay filter. Close stops them all.
package transport
