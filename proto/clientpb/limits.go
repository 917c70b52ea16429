package clientpb

// The fetch response sizes that both ends of the client API must agree on:
// a node never sends a larger response than the client asked for, and a
// client can only receive what its gRPC receive limit admits.
const (
	// DefaultFetchResponseBytes is gRPC's default receive limit (4 MiB).
	// A fetch that leaves max_bytes at 0 gets an encoded response no
	// larger, so a stock gRPC client can fetch without raising its limit.
	DefaultFetchResponseBytes = 4 << 20
	// MaxFetchResponseBytes is the largest encoded fetch response a node
	// sends, whatever max_bytes asks (64 MiB). The Go client raises its
	// receive limit to it; other clients that ask for more than
	// DefaultFetchResponseBytes must raise theirs.
	MaxFetchResponseBytes = 64 << 20
)
