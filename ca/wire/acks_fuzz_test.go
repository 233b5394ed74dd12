package wire

import (
	"encoding/hex"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// FuzzAckReport: any request body either fails to decode, is refused by
// Validate, or is a report whose counts the CA can add up safely — and it
// survives a round trip through the agent's encoding unchanged.
func FuzzAckReport(f *testing.F) {
	for _, rep := range []AckReport{
		{Instance: "a1", Bundle: testDigest(), Lagging: 1, Watchers: 3},
		{Instance: "a1", Bundle: testDigest(), Lagging: -5, Watchers: 0},
		{Instance: "a1", Bundle: testDigest(), Lagging: 0, Watchers: 1 << 40},
	} {
		in, err := encodeAckReport(rep)
		if err != nil {
			f.Fatal(err)
		}
		b, err := proto.Marshal(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := new(structpb.Struct)
		if proto.Unmarshal(data, in) != nil {
			return
		}
		rep := decodeAckReport(in)
		if rep.Validate() != nil {
			return
		}
		if rep.Watchers < 0 || rep.Watchers > MaxAckWatchers || rep.Lagging < 0 || rep.Lagging > rep.Watchers {
			t.Fatalf("accepted counts out of range: %+v", rep)
		}
		if b, err := hex.DecodeString(rep.Bundle); err != nil || len(b) != 32 || len(rep.Instance) == 0 || len(rep.Instance) > maxInstance {
			t.Fatalf("accepted a malformed report: %+v", rep)
		}
		again, err := encodeAckReport(rep)
		if err != nil {
			t.Fatalf("cannot encode an accepted report %+v: %v", rep, err)
		}
		if back := decodeAckReport(again); back != rep {
			t.Fatalf("round trip changed the report: %+v became %+v", rep, back)
		}
	})
}
