package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/multiraft"
	"github.com/flotilla-io/flotilla/partition"
	"github.com/flotilla-io/flotilla/proto/clientpb"
	"github.com/flotilla-io/flotilla/transport"
)

// nodeMetrics are the client API's figures.
type nodeMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newNodeMetrics(reg prometheus.Registerer) *nodeMetrics {
	m := &nodeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "flotilla", Subsystem: "client",
			Name: "requests_total", Help: "Client API calls by method and gRPC status code."}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "flotilla", Subsystem: "client",
			Name: "request_duration_seconds", Help: "Client API call latency by method.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16)}, []string{"method"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// observe counts a call when it returns (err points at its result).
func (m *nodeMetrics) observe(method string, start time.Time, err *error) {
	m.requests.WithLabelValues(method, status.Code(*err).String()).Inc()
	m.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// service implements the client API on a node.
type service struct {
	clientpb.UnimplementedPartitionsServer
	n *Node
}

// statusOf maps a host or partition error to a gRPC status; a not-leader
// error carries the leader and its address. (A fetch out of range is
// answered by Fetch, as its detail needs the high watermark.)
func (s *service) statusOf(partitionID uint64, err error) error {
	var nl *multiraft.NotLeaderError
	var busy *multiraft.BusyError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "outcome unknown (retry with the same producer ID and sequence to apply it once): %v", err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%v", err)
	case errors.As(err, &nl):
		return s.notLeader(partitionID, uint64(nl.Leader))
	case errors.Is(err, multiraft.ErrGroupNotFound):
		return status.Errorf(codes.NotFound, "partition %d is not hosted on node %d", partitionID, s.n.cfg.NodeID)
	case errors.Is(err, multiraft.ErrGroupExists):
		return status.Errorf(codes.AlreadyExists, "partition %d: %v", partitionID, err)
	case errors.As(err, &busy):
		return exhausted("busy", busy.RetryAfter, "%v", err)
	case errors.Is(err, multiraft.ErrBusy):
		return exhausted("busy", 100*time.Millisecond, "%v", err)
	case errors.Is(err, multiraft.ErrNoSpace):
		return exhausted("disk_full", diskFullRetry, "%v", err)
	case errors.Is(err, partition.ErrTooManyProducers):
		return exhausted("too_many_producers", time.Minute, "%v", err)
	case errors.Is(err, multiraft.ErrTooLarge), errors.Is(err, multiraft.ErrInvalid), errors.Is(err, partition.ErrMalformed),
		errors.Is(err, partition.ErrEmpty):
		return status.Errorf(codes.InvalidArgument, "%v", err)
	case errors.Is(err, partition.ErrOutOfOrder):
		return status.Errorf(codes.FailedPrecondition, "%v", err)
	case errors.Is(err, multiraft.ErrAmbiguous):
		return status.Errorf(codes.Unavailable, "outcome unknown (retry with the same producer ID and sequence to apply it once): %v", err)
	case errors.Is(err, multiraft.ErrStopped), errors.Is(err, multiraft.ErrGroupFailed):
		return status.Errorf(codes.Unavailable, "%v", err)
	case errors.Is(err, multiraft.ErrRejected):
		return status.Errorf(codes.Aborted, "%v", err)
	default:
		return status.Errorf(codes.Internal, "%v", err)
	}
}

// adminError is the status of a failed admin call (what says which call
// and node): unavailable if the node could not be reached (worth a
// retry), exhausted if its disk is short of space, a refusal otherwise (a
// deleted partition's ID, a node that is not a member).
func adminError(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, transport.ErrUnknownPeer), errors.Is(err, multiraft.ErrStopped):
		return status.Errorf(codes.Unavailable, "%s: %v", msg, err)
	case errors.Is(err, multiraft.ErrNoSpace), errors.Is(err, transport.ErrExhausted):
		return exhausted("disk_full", diskFullRetry, "%s: %v", msg, err)
	default:
		return status.Errorf(codes.FailedPrecondition, "%s: %v", msg, err)
	}
}

// diskFullRetry is the retry hint of a node whose disk is short of space:
// space comes back as logs are truncated and replicas move, in seconds
// at best.
const diskFullRetry = 10 * time.Second

// exhausted is a RESOURCE_EXHAUSTED status: every one the node answers
// comes from here, with its reason and retry hint (documented in
// client.proto's ResourceExhausted).
func exhausted(reason string, retryAfter time.Duration, format string, args ...any) error {
	st := status.Newf(codes.ResourceExhausted, format, args...)
	if withDetail, err := st.WithDetails(&clientpb.ResourceExhausted{Reason: reason, RetryAfterMs: uint64(retryAfter.Milliseconds())}); err == nil {
		st = withDetail
	}
	return st.Err()
}

// outOfRange is an OUT_OF_RANGE status, the answer to a fetch from an
// offset this replica does not hold: below its log start or past its high
// watermark.
func outOfRange(re *partition.RangeError) error {
	st := status.Newf(codes.OutOfRange, "%v", re)
	if withDetail, derr := st.WithDetails(&clientpb.OutOfRange{LogStartOffset: re.Start, HighWatermark: re.HighWatermark}); derr == nil {
		st = withDetail
	}
	return st.Err()
}

func (s *service) notLeader(partitionID, leader uint64) error {
	st := status.Newf(codes.FailedPrecondition, "node %d does not lead partition %d (leader: node %d)", s.n.cfg.NodeID, partitionID, leader)
	st, err := st.WithDetails(&clientpb.NotLeader{PartitionId: partitionID, LeaderNodeId: leader, LeaderAddress: s.n.clientAddr(leader)})
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "node %d does not lead partition %d", s.n.cfg.NodeID, partitionID)
	}
	return st.Err()
}

func (s *service) CreatePartition(ctx context.Context, req *clientpb.CreatePartitionRequest) (_ *clientpb.CreatePartitionResponse, err error) {
	defer s.n.m.observe("CreatePartition", time.Now(), &err)
	id, replicas := req.GetPartitionId(), slices.Clone(req.GetReplicaNodeIds())
	slices.Sort(replicas)
	replicas = slices.Compact(replicas)
	if id == 0 || len(replicas) == 0 {
		return nil, status.Error(codes.InvalidArgument, "a partition needs a non-zero ID and at least one replica node")
	}
	for _, node := range replicas {
		if !s.n.isNode(node) {
			return nil, status.Errorf(codes.InvalidArgument, "node %d is not in the cluster", node)
		}
	}
	if err := checkRetention(req.GetRetention()); err != nil {
		return nil, err
	}
	members := make([]multiraft.NodeID, len(replicas))
	for i, node := range replicas {
		members[i] = multiraft.NodeID(node)
	}
	for _, node := range members {
		if err := s.n.host.CreateGroupOn(ctx, node, multiraft.GroupID(id), members); err != nil {
			return nil, adminError(err, "creating partition %d on node %d", id, node)
		}
	}
	if r := req.GetRetention(); r != nil {
		// Retention goes through the partition's log, so it waits for a
		// leader; a retry of the whole call sets it again.
		if err := s.n.configure(ctx, id, replicas, retentionOf(r)); err != nil {
			return nil, status.Errorf(codes.Unavailable, "partition %d created, its retention not set yet (retry): %v", id, err)
		}
	}
	return &clientpb.CreatePartitionResponse{}, nil
}

func (s *service) AlterPartition(ctx context.Context, req *clientpb.AlterPartitionRequest) (_ *clientpb.AlterPartitionResponse, err error) {
	defer s.n.m.observe("AlterPartition", time.Now(), &err)
	id := req.GetPartitionId()
	switch {
	case id == 0:
		return nil, status.Error(codes.InvalidArgument, "partition 0 does not exist")
	case req.GetRetention() == nil:
		return nil, status.Error(codes.InvalidArgument, "no retention given (an empty one keeps records for ever)")
	}
	if err := checkRetention(req.GetRetention()); err != nil {
		return nil, err
	}
	// The replicas to ask: as this node knows them, else every node.
	var replicas []uint64
	if st, err := s.n.host.Status(multiraft.GroupID(id)); err == nil {
		for _, node := range st.Replicas {
			replicas = append(replicas, uint64(node))
		}
	} else {
		replicas = s.n.nodes()
	}
	slices.Sort(replicas)
	if err := s.n.configure(ctx, id, slices.Compact(replicas), retentionOf(req.GetRetention())); err != nil {
		if errors.Is(err, errNoPartition) {
			return nil, status.Errorf(codes.NotFound, "partition %d: no node hosts it", id)
		}
		return nil, status.Errorf(codes.Unavailable, "setting the retention of partition %d: %v", id, err)
	}
	return &clientpb.AlterPartitionResponse{}, nil
}

func (s *service) DeletePartition(ctx context.Context, req *clientpb.DeletePartitionRequest) (_ *clientpb.DeletePartitionResponse, err error) {
	defer s.n.m.observe("DeletePartition", time.Now(), &err)
	id := req.GetPartitionId()
	if id == 0 {
		return nil, status.Error(codes.InvalidArgument, "partition 0 does not exist")
	}
	for _, node := range s.n.nodes() {
		if err := s.n.host.RemoveGroupOn(ctx, multiraft.NodeID(node), multiraft.GroupID(id)); err != nil {
			return nil, adminError(err, "deleting partition %d on node %d", id, node)
		}
	}
	return &clientpb.DeletePartitionResponse{}, nil
}

func (s *service) info(id uint64) (*clientpb.PartitionInfo, error) {
	st, err := s.n.host.Status(multiraft.GroupID(id))
	if err != nil {
		return nil, s.statusOf(id, err)
	}
	info := &clientpb.PartitionInfo{PartitionId: id, NodeId: s.n.cfg.NodeID, Role: st.Role.String(), LeaderNodeId: uint64(st.Leader),
		Term: st.Term, CommitIndex: st.Commit, AppliedIndex: st.Applied}
	if st.Leader != 0 {
		info.LeaderAddress = s.n.clientAddr(uint64(st.Leader))
	}
	for _, node := range st.Replicas {
		info.ReplicaNodeIds = append(info.ReplicaNodeIds, uint64(node))
	}
	slices.Sort(info.ReplicaNodeIds)
	if l := s.n.partitionLog(id); l != nil {
		if b, err := l.Bounds(); err == nil {
			info.HighWatermark, info.LogStartOffset, info.SizeBytes = b.HighWatermark, b.Start, b.Bytes
			info.Retention = retentionPB(b.Retention)
		}
	}
	var last uint64
	for _, p := range st.Progress {
		last = max(last, p.Match)
	}
	for replica, p := range st.Progress {
		if node := uint64(st.Replicas[replica]); node != s.n.cfg.NodeID {
			info.Followers = append(info.Followers, &clientpb.FollowerLag{NodeId: node, MatchIndex: p.Match, LagEntries: last - p.Match,
				State: p.State.String(), SnapshotFailures: p.SnapshotFailures, LastSnapshotError: p.SnapshotError})
		}
	}
	slices.SortFunc(info.Followers, func(a, b *clientpb.FollowerLag) int { return int(a.NodeId) - int(b.NodeId) })
	return info, nil
}

func (s *service) DescribePartition(_ context.Context, req *clientpb.DescribePartitionRequest) (_ *clientpb.PartitionInfo, err error) {
	defer s.n.m.observe("DescribePartition", time.Now(), &err)
	return s.info(req.GetPartitionId())
}

func (s *service) ListPartitions(context.Context, *clientpb.ListPartitionsRequest) (_ *clientpb.ListPartitionsResponse, err error) {
	defer s.n.m.observe("ListPartitions", time.Now(), &err)
	ids := s.n.host.Groups()
	slices.Sort(ids)
	resp := &clientpb.ListPartitionsResponse{}
	for _, id := range ids {
		if info, err := s.info(uint64(id)); err == nil {
			resp.Partitions = append(resp.Partitions, info)
		}
	}
	return resp, nil
}

func (s *service) Produce(ctx context.Context, req *clientpb.ProduceRequest) (_ *clientpb.ProduceResponse, err error) {
	defer s.n.m.observe("Produce", time.Now(), &err)
	id := req.GetPartitionId()
	if err := s.n.cfg.Limits.checkProduce(req.GetRecords()); err != nil {
		return nil, err
	}
	p := &partition.Produce{ProducerID: req.GetProducerId(), Sequence: req.GetSequence(),
		TimestampMs: uint64(time.Now().UnixMilli()), Records: req.GetRecords()}
	res, err := s.n.host.Propose(ctx, multiraft.GroupID(id), p.Marshal())
	if err != nil {
		return nil, s.statusOf(id, err)
	}
	r, err := partition.DecodeResult(res.Value)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		return nil, s.statusOf(id, err)
	}
	return &clientpb.ProduceResponse{BaseOffset: r.BaseOffset, Count: r.Count, Duplicate: r.Duplicate}, nil
}

func (s *service) Fetch(ctx context.Context, req *clientpb.FetchRequest) (_ *clientpb.FetchResponse, err error) {
	defer s.n.m.observe("Fetch", time.Now(), &err)
	id := req.GetPartitionId()
	l := s.n.partitionLog(id)
	if l == nil {
		return nil, s.statusOf(id, fmt.Errorf("%w: %d", multiraft.ErrGroupNotFound, id))
	}
	if req.GetLinearizable() {
		if err := s.n.host.ReadIndex(ctx, multiraft.GroupID(id)); err != nil {
			return nil, s.statusOf(id, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, s.statusOf(id, err) // the caller left: read nothing for it
	}
	maxRecords, maxBytes := s.n.cfg.Limits.fetchBounds(req)
	// The log bounds record data only; as that is less than the encoded
	// response, it returns at least what fits, and fitRecords trims the rest.
	records, hw, err := l.Fetch(req.GetOffset(), maxRecords, maxBytes)
	if re, ok := partition.AsRangeError(err); ok {
		return nil, outOfRange(re)
	}
	switch {
	case err != nil:
		return nil, s.statusOf(id, err)
	}
	resp := &clientpb.FetchResponse{BaseOffset: req.GetOffset(), HighWatermark: hw}
	fitRecords(resp, records, maxBytes)
	return resp, nil
}

func (s *service) TransferLeadership(ctx context.Context, req *clientpb.TransferLeadershipRequest) (_ *clientpb.TransferLeadershipResponse, err error) {
	defer s.n.m.observe("TransferLeadership", time.Now(), &err)
	if err := s.n.host.TransferLeadership(ctx, multiraft.GroupID(req.GetPartitionId()), multiraft.NodeID(req.GetToNodeId())); err != nil {
		return nil, s.statusOf(req.GetPartitionId(), err)
	}
	return &clientpb.TransferLeadershipResponse{}, nil
}

func (s *service) ChangeReplicas(ctx context.Context, req *clientpb.ChangeReplicasRequest) (_ *clientpb.ChangeReplicasResponse, err error) {
	defer s.n.m.observe("ChangeReplicas", time.Now(), &err)
	id := req.GetPartitionId()
	group := multiraft.GroupID(id)
	for _, n := range req.GetAddNodeIds() {
		if !s.n.isNode(n) {
			return nil, status.Errorf(codes.InvalidArgument, "node %d is not in the cluster", n)
		}
		node := multiraft.NodeID(n)
		// A learner first: it catches up before it counts in the quorum.
		replicas, err := s.n.host.ChangeMembership(ctx, group, multiraft.Change{Type: multiraft.AddLearner, Node: node})
		if err != nil {
			return nil, s.statusOf(id, err)
		}
		var replicaID multiraft.ReplicaID
		for r, rn := range replicas {
			if rn == node {
				replicaID = max(replicaID, r)
			}
		}
		if err := s.n.host.JoinGroupOn(ctx, node, group, replicaID); err != nil {
			return nil, adminError(err, "creating the replica of partition %d on node %d", id, node)
		}
		if _, err := s.n.host.ChangeMembership(ctx, group, multiraft.Change{Type: multiraft.AddVoter, Node: node}); err != nil {
			return nil, s.statusOf(id, err)
		}
	}
	for _, n := range req.GetRemoveNodeIds() {
		if _, err := s.n.host.ChangeMembership(ctx, group, multiraft.Change{Type: multiraft.RemoveReplica, Node: multiraft.NodeID(n)}); err != nil {
			return nil, s.statusOf(id, err)
		}
	}
	return &clientpb.ChangeReplicasResponse{}, nil
}
