package route

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/esraft/esraft/raftlog/internal/wire"
)

// MethodFeatures asks a node which features of the entry format and the
// protocol it knows (answered by that node, never forwarded): an
// operation that a node of an older version would skip as an entry it
// cannot decode is proposed only once every member knows it. A node of a
// version before this call answers it with an error, which means "none".
const MethodFeatures byte = 9

// FeatureForceReset: the node applies wire.GopForceReset.
const FeatureForceReset = "group-force-reset"

// Features lists what this version knows (MethodFeatures).
var Features = []string{FeatureForceReset}

func encodeFeatures(fs []string) []byte {
	b := binary.AppendUvarint(nil, uint64(len(fs)))
	for _, f := range fs {
		b = wire.AppendString(b, f)
	}
	return b
}

func decodeFeatures(b []byte) ([]string, error) {
	d := wire.Decoder{B: b}
	var fs []string
	for n := d.Count(1); n > 0 && d.Err == nil; n-- {
		fs = append(fs, d.Str())
	}
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("raftlog: undecodable features reply: %w", err)
	}
	return fs, nil
}

// NodeFeatures asks the node at addr which features it knows.
func (r *Router) NodeFeatures(ctx context.Context, addr string) ([]string, error) {
	resp, err := r.client.Call(ctx, addr, MethodFeatures, nil)
	if err != nil {
		return nil, err
	}
	return decodeFeatures(resp)
}

// Featured is one node's answer to FeaturesAll.
type Featured struct {
	Features []string
	Err      error
}

// FeaturesAll asks every address at once, each within timeout, which
// features it knows, as ProbeAll probes.
func (r *Router) FeaturesAll(ctx context.Context, addrs []string, timeout time.Duration) []Featured {
	out := make([]Featured, len(addrs))
	askAll(ctx, addrs, timeout, func(ctx context.Context, i int, addr string) {
		out[i].Features, out[i].Err = r.NodeFeatures(ctx, addr)
	})
	return out
}

// SetFeatures makes this node answer MethodFeatures with fs instead of
// Features (tests play a node of an older version with nil).
func (r *Router) SetFeatures(fs []string) { r.features.Store(&fs) }
