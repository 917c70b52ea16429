// Package client is the Go client of the reference node's API: it keeps a
// connection per node it talks to and follows not-leader answers to the
// partition's leader, so callers name a partition, not a node.
package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// maxHops bounds how many not-leader answers one call follows.
const maxHops = 5

// Client talks to a cluster's nodes.
type Client struct {
	endpoints []string
	creds     credentials.TransportCredentials

	mu struct {
		sync.Mutex
		conns   map[string]*grpc.ClientConn
		leaders map[uint64]string // partition -> leader address, as last heard
		next    int               // round robin over endpoints
	}
}

// New returns a client of the nodes at endpoints (any subset of the
// cluster). creds nil: plaintext.
func New(endpoints []string, creds credentials.TransportCredentials) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("client: no endpoints")
	}
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	c := &Client{endpoints: endpoints, creds: creds}
	c.mu.conns = map[string]*grpc.ClientConn{}
	c.mu.leaders = map[uint64]string{}
	return c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.mu.conns {
		_ = cc.Close()
	}
	clear(c.mu.conns)
	return nil
}

func (c *Client) conn(addr string) (clientpb.PartitionsClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc := c.mu.conns[addr]
	if cc == nil {
		var err error
		// The receive limit is raised to the largest fetch response a
		// node sends: a fetch may ask for more than gRPC's default 4 MiB.
		if cc, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(c.creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(clientpb.MaxFetchResponseBytes))); err != nil {
			return nil, fmt.Errorf("client: %s: %w", addr, err)
		}
		c.mu.conns[addr] = cc
	}
	return clientpb.NewPartitionsClient(cc), nil
}

// pick returns where to send a call about a partition: its last known
// leader, else the next endpoint.
func (c *Client) pick(partition uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if addr, ok := c.mu.leaders[partition]; ok && partition != 0 {
		return addr
	}
	addr := c.endpoints[c.mu.next%len(c.endpoints)]
	c.mu.next++
	return addr
}

func (c *Client) setLeader(partition uint64, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if addr == "" {
		delete(c.mu.leaders, partition)
	} else {
		c.mu.leaders[partition] = addr
	}
}

// NotLeader returns the detail of a not-leader answer, nil if err is not
// one.
func NotLeader(err error) *clientpb.NotLeader {
	return detail[*clientpb.NotLeader](err, codes.FailedPrecondition)
}

// OutOfRange returns the detail of an OUT_OF_RANGE answer (a fetch from
// an offset the replica does not hold): the offsets it holds. Nil if err
// is not one.
func OutOfRange(err error) *clientpb.OutOfRange {
	return detail[*clientpb.OutOfRange](err, codes.OutOfRange)
}

// Exhausted returns the detail of a RESOURCE_EXHAUSTED answer from a node:
// the reason and how long to wait before retrying. Nil if err is not one,
// or if gRPC itself refused a message over its size limit.
func Exhausted(err error) *clientpb.ResourceExhausted {
	return detail[*clientpb.ResourceExhausted](err, codes.ResourceExhausted)
}

// detail returns the first detail of type T of a status with the given
// code, the zero T if there is none.
func detail[T any](err error, code codes.Code) T {
	var zero T
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		return zero
	}
	for _, d := range st.Details() {
		if v, ok := d.(T); ok {
			return v
		}
	}
	return zero
}

// call runs fn against the node that should answer for the partition:
// it follows not-leader answers (at most maxHops redirects in a row), and
// while no leader is known or a node is down it tries the endpoints in
// turn, pausing a little longer each time, until ctx ends.
func (c *Client) call(ctx context.Context, partition uint64, fn func(clientpb.PartitionsClient) error) error {
	addr := c.pick(partition)
	redirects, pause, notFound := 0, 10*time.Millisecond, 0
	for {
		pc, err := c.conn(addr)
		if err != nil {
			return err
		}
		err = fn(pc)
		nl := NotLeader(err)
		switch {
		case err == nil:
			c.setLeader(partition, addr)
			return nil
		case nl != nil && nl.GetLeaderAddress() != "" && nl.GetLeaderAddress() != addr && redirects < maxHops:
			redirects++
			addr = nl.GetLeaderAddress()
			continue
		case status.Code(err) == codes.NotFound && partition != 0 && notFound < len(c.endpoints):
			// The node we thought led it no longer hosts it (a replica
			// moved): ask the others before believing it.
			notFound++
			c.setLeader(partition, "")
			addr = c.pick(partition)
			continue
		case nl != nil, status.Code(err) == codes.Unavailable:
			c.setLeader(partition, "")
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		redirects, pause = 0, min(2*pause, 200*time.Millisecond)
		addr = c.pick(partition)
	}
}

// CreatePartition creates a partition on the given nodes, keeping its
// records for ever.
func (c *Client) CreatePartition(ctx context.Context, id uint64, nodes []uint64) error {
	return c.CreatePartitionRetained(ctx, id, nodes, nil)
}

// CreatePartitionRetained creates a partition on the given nodes with a
// retention (nil: none).
func (c *Client) CreatePartitionRetained(ctx context.Context, id uint64, nodes []uint64, r *clientpb.Retention) error {
	return c.call(ctx, 0, func(pc clientpb.PartitionsClient) error {
		_, err := pc.CreatePartition(ctx, &clientpb.CreatePartitionRequest{PartitionId: id, ReplicaNodeIds: nodes, Retention: r})
		return err
	})
}

// AlterPartition replaces a partition's retention.
func (c *Client) AlterPartition(ctx context.Context, id uint64, r *clientpb.Retention) error {
	return c.call(ctx, 0, func(pc clientpb.PartitionsClient) error {
		_, err := pc.AlterPartition(ctx, &clientpb.AlterPartitionRequest{PartitionId: id, Retention: r})
		return err
	})
}

// DeletePartition deletes a partition everywhere.
func (c *Client) DeletePartition(ctx context.Context, id uint64) error {
	return c.call(ctx, 0, func(pc clientpb.PartitionsClient) error {
		_, err := pc.DeletePartition(ctx, &clientpb.DeletePartitionRequest{PartitionId: id})
		return err
	})
}

// Describe returns the partition as its leader sees it (or, without a
// known leader, as some replica does).
func (c *Client) Describe(ctx context.Context, id uint64) (*clientpb.PartitionInfo, error) {
	req := &clientpb.DescribePartitionRequest{PartitionId: id}
	var info *clientpb.PartitionInfo
	err := c.call(ctx, id, func(pc clientpb.PartitionsClient) error {
		var err error
		info, err = pc.DescribePartition(ctx, req)
		return err
	})
	if err != nil || info.GetRole() == "leader" || info.GetLeaderAddress() == "" {
		return info, err
	}
	pc, err := c.conn(info.GetLeaderAddress())
	if err != nil {
		return info, nil
	}
	if li, err := pc.DescribePartition(ctx, req); err == nil {
		c.setLeader(id, info.GetLeaderAddress())
		return li, nil
	}
	return info, nil
}

// List returns the partitions of one node (the first endpoint that
// answers).
func (c *Client) List(ctx context.Context) ([]*clientpb.PartitionInfo, error) {
	var resp *clientpb.ListPartitionsResponse
	err := c.call(ctx, 0, func(pc clientpb.PartitionsClient) error {
		var err error
		resp, err = pc.ListPartitions(ctx, &clientpb.ListPartitionsRequest{})
		return err
	})
	return resp.GetPartitions(), err
}

// Produce appends records to a partition through its leader.
func (c *Client) Produce(ctx context.Context, req *clientpb.ProduceRequest) (*clientpb.ProduceResponse, error) {
	var resp *clientpb.ProduceResponse
	err := c.call(ctx, req.GetPartitionId(), func(pc clientpb.PartitionsClient) error {
		var err error
		resp, err = pc.Produce(ctx, req)
		return err
	})
	return resp, err
}

// Fetch reads records from a partition (from its leader, as last known).
func (c *Client) Fetch(ctx context.Context, req *clientpb.FetchRequest) (*clientpb.FetchResponse, error) {
	var resp *clientpb.FetchResponse
	err := c.call(ctx, req.GetPartitionId(), func(pc clientpb.PartitionsClient) error {
		var err error
		resp, err = pc.Fetch(ctx, req)
		return err
	})
	return resp, err
}

// FetchFrom reads records from one node's replica.
func (c *Client) FetchFrom(ctx context.Context, addr string, req *clientpb.FetchRequest) (*clientpb.FetchResponse, error) {
	pc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	return pc.Fetch(ctx, req)
}

// TransferLeadership moves a partition's leadership to a node.
func (c *Client) TransferLeadership(ctx context.Context, id, to uint64) error {
	return c.call(ctx, id, func(pc clientpb.PartitionsClient) error {
		_, err := pc.TransferLeadership(ctx, &clientpb.TransferLeadershipRequest{PartitionId: id, ToNodeId: to})
		return err
	})
}

// ChangeReplicas adds and removes a partition's replica nodes.
func (c *Client) ChangeReplicas(ctx context.Context, id uint64, add, remove []uint64) error {
	return c.call(ctx, id, func(pc clientpb.PartitionsClient) error {
		_, err := pc.ChangeReplicas(ctx, &clientpb.ChangeReplicasRequest{PartitionId: id, AddNodeIds: add, RemoveNodeIds: remove})
		return err
	})
}
