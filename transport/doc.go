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
// Each peer has one queue, bounded in messages and bytes (heartbeats and
// responses apart, under their own bound, so that an overloaded queue
// drops appends, which raft resends, and never the heartbeats whose loss
// would end in elections), and one sender
// goroutine that drains it into frames (bounded in messages and bytes)
// carrying the messages of every group for that peer. Messages of one
// group to one peer stay in order.
//
// Heartbeats and heartbeat responses are coalesced: each becomes a small
// record (group, from, to, term, commit, context) in its frame, and plain
// ones (without a ReadIndex context) do not wake the sender. They wait for
// the host's tick, which calls Flush before it ticks any group: each tick
// sends exactly the heartbeats and responses of the tick before, in one
// frame per peer, whatever the number of groups. A heartbeat with a
// ReadIndex context, or any other message, wakes the sender, and whatever
// heartbeats wait ride along. A heartbeat is never placed in a frame after
// another message of its group (the receiver delivers a frame's heartbeats
// first), and two heartbeats of a group are never merged.
//
// A failed send reports the frame and everything queued behind it
// unreachable and marks the peer down: until the next successful dial,
// after an exponential backoff with jitter capped by Config.MaxBackoff,
// messages to it are dropped at once and reported.
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
// each host opens one long-lived client stream of frames to each peer (so
// a pair of nodes has one stream per direction, and responses travel on
// the other node's stream). The first frame's handshake names the cluster
// and both nodes; a wrong cluster or receiver is refused and counted.
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
