package integration

import (
	"flag"
	"testing"

	"github.com/flotilla-io/flotilla/flotillatest"
)

// transportFlag picks the transport of every cluster a test run builds:
// go test ./integration -transport=grpc runs the suite over real gRPC.
var transportFlag = flag.String("transport", "memory", "transport of the test clusters: memory or grpc")

// The suite runs on the embedders' test kit.
type (
	Cluster       = flotillatest.Cluster
	ClusterConfig = flotillatest.Config
	NodeID        = flotillatest.NodeID
	GroupID       = flotillatest.GroupID
)

const (
	Memory = flotillatest.Memory
	GRPC   = flotillatest.GRPC
)

// NewCluster starts a kit cluster on the -transport flag's transport
// unless the config names one.
func NewCluster(t testing.TB, cfg ClusterConfig) *Cluster {
	if cfg.Transport == "" {
		cfg.Transport = *transportFlag
	}
	return flotillatest.NewCluster(t, cfg)
}
