package multiraft

import (
	"fmt"
	"testing"
)

func TestProposalBatchCodec(t *testing.T) {
	ps := []*proposal{{id: 1 << 60, data: []byte("a")}, {id: 7, data: nil}, {id: 9, data: make([]byte, 300)}}
	b := encodeBatch(ps)
	var got []string
	if err := decodeBatch(b, func(slot int, id uint64, data []byte) {
		got = append(got, fmt.Sprintf("%d:%d:%d", slot, id, len(data)))
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprintf("[0:%d:1 1:7:0 2:9:300]", uint64(1<<60)) {
		t.Fatalf("decoded %v", got)
	}
	for cut := 0; cut < len(b); cut++ {
		if err := decodeBatch(b[:cut], func(int, uint64, []byte) {}); err == nil && cut != 0 {
			// A prefix may only decode if it happens to be a whole batch.
			t.Fatalf("truncated batch of %d bytes decoded", cut)
		}
	}
}
