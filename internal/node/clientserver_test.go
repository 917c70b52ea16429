package node

import (
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-io/flotilla/proto/clientpb"
)

// TestUnmarshalProduce: the client server's produce decoder reads what
// protobuf reads (unknown fields skipped, empty records kept), keeps at
// most its limit of records, and refuses what protobuf refuses.
func TestUnmarshalProduce(t *testing.T) {
	for _, req := range []*clientpb.ProduceRequest{
		{},
		{PartitionId: 7, Records: [][]byte{[]byte("a"), {}, []byte("ccc")}},
		{PartitionId: math.MaxUint64, ProducerId: math.MaxUint64, Sequence: math.MaxUint64 - 1, Records: make([][]byte, 5)},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, 9, protowire.BytesType) // a field of a later version
		b = protowire.AppendBytes(b, []byte("unknown"))
		var want, got clientpb.ProduceRequest
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		want.ProtoReflect().SetUnknown(nil)
		if err := unmarshalProduce(b, &got, 100); err != nil || !proto.Equal(&got, &want) {
			t.Fatalf("decoded %v, %v; want %v", &got, err, &want)
		}
		var capped clientpb.ProduceRequest
		if err := unmarshalProduce(b, &capped, 2); err != nil || len(capped.Records) != min(2, len(req.Records)) {
			t.Fatalf("capped at 2: %d records, %v", len(capped.Records), err)
		}
	}
	good, _ := proto.Marshal(&clientpb.ProduceRequest{PartitionId: 1, Records: [][]byte{[]byte("abc")}})
	for _, bad := range [][]byte{good[:len(good)-1], {0x12, 0x05, 'a'}, {0x08}} {
		var p clientpb.ProduceRequest
		if proto.Unmarshal(bad, &p) == nil || unmarshalProduce(bad, &clientpb.ProduceRequest{}, 100) == nil {
			t.Fatalf("%x: a truncated request decoded", bad)
		}
	}
}
