package multiraft

import (
	"context"

	"github.com/flotilla-io/flotilla/proto/peerpb"
	"github.com/flotilla-io/flotilla/scheduler"
	"github.com/flotilla-io/flotilla/transport"
)

// hostPorts is the face a host shows its transport and its scheduler.
// Their callbacks are plumbing, not the embedder's API, so they live on
// this unexported view of the Host rather than in its method set.
type hostPorts Host

var (
	_ transport.Handler   = (*hostPorts)(nil)
	_ scheduler.Processor = (*hostPorts)(nil)
)

func (h *Host) ports() *hostPorts { return (*hostPorts)(h) }

// Process implements scheduler.Processor.
func (p *hostPorts) Process(groupID uint64, w scheduler.Work) { (*Host)(p).process(groupID, w) }

// HandleMessages implements transport.Handler.
func (p *hostPorts) HandleMessages(from transport.NodeID, batch []transport.Envelope) {
	(*Host)(p).handleMessages(from, batch)
}

// HandleAlive implements transport.Handler.
func (p *hostPorts) HandleAlive(from transport.NodeID, incarnation uint64) {
	(*Host)(p).live.heard(from, incarnation)
}

// HandleUnreachable implements transport.Handler.
func (p *hostPorts) HandleUnreachable(to transport.NodeID, dropped []transport.Envelope) {
	(*Host)(p).handleUnreachable(to, dropped)
}

// HandleSnapshot implements transport.Handler.
func (p *hostPorts) HandleSnapshot(from transport.NodeID, s *transport.InboundSnapshot) error {
	return (*Host)(p).handleSnapshot(from, s)
}

// HandleAdmin implements transport.Handler.
func (p *hostPorts) HandleAdmin(ctx context.Context, from transport.NodeID, req *peerpb.AdminRequest) (*peerpb.AdminResponse, error) {
	return (*Host)(p).handleAdmin(ctx, from, req)
}
