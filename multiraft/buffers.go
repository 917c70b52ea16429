package multiraft

import (
	"sync"

	"github.com/flotilla-io/flotilla/transport"
)

// Slices a busy group fills and a pass drains are borrowed from pools
// shared by every group, so a busy group does not grow a fresh slice
// (and its copies) every pass, and an idle one holds none.

// maxPooledLen bounds the slices given back to a pool: one burst must
// not pin a large array for good.
const maxPooledLen = 1024

// slicePool lends slices of T. A slice travels with its box (the
// pointer the pool holds), so giving it back allocates nothing.
type slicePool[T any] struct{ p sync.Pool }

// get returns an empty slice and its box.
func (sp *slicePool[T]) get() (*[]T, []T) {
	if box, ok := sp.p.Get().(*[]T); ok {
		return box, (*box)[:0]
	}
	box := new([]T)
	return box, nil
}

// put gives s back in its box, cleared (it must not keep what it pointed
// to alive); a box of nil is ignored.
func (sp *slicePool[T]) put(box *[]T, s []T) {
	if box == nil || cap(s) > maxPooledLen {
		return
	}
	clear(s)
	*box = s[:0]
	sp.p.Put(box)
}

var inboxPool slicePool[inbound]

// outgoing gathers a Ready's messages by destination node. A group sends
// to a handful of nodes: a short list beats a map.
type outgoing struct {
	nodes   []uint64
	batches [][]transport.Envelope
}

var outgoingPool = sync.Pool{New: func() any { return new(outgoing) }}

func (o *outgoing) add(node uint64, e transport.Envelope) {
	for i, n := range o.nodes {
		if n == node {
			o.batches[i] = append(o.batches[i], e)
			return
		}
	}
	o.nodes = append(o.nodes, node)
	if len(o.batches) < len(o.nodes) {
		o.batches = append(o.batches, nil)
	}
	i := len(o.nodes) - 1
	o.batches[i] = append(o.batches[i][:0], e)
}

// release clears the batches (the transport copied them) and returns o to
// its pool.
func (o *outgoing) release() {
	for i := range o.nodes {
		clear(o.batches[i])
		if cap(o.batches[i]) > maxPooledLen {
			o.batches[i] = nil
		}
	}
	o.nodes = o.nodes[:0]
	outgoingPool.Put(o)
}
