package eventstore

import (
	"context"
	"strings"

	"github.com/esraft/esraft/raftlog"
)

// ListStreamsOptions select the streams ListStreams returns.
type ListStreamsOptions struct {
	// Prefix keeps the streams whose name starts with it; Category, if
	// set instead, the streams of a category (the name itself and names
	// starting with it and '-', see Category).
	Prefix, Category string
	// After is the last stream of the previous page ("" for the first).
	After string
	// Limit is the page size (default 100, at most MaxListStreams).
	Limit int
}

// MaxListStreams bounds one page of ListStreams.
const MaxListStreams = raftlog.MaxListKeys

// ListedStream is a stream as ListStreams lists it.
type ListedStream struct {
	Stream    string
	Partition Partition
	Version   uint64 // the version of its last event; kept when deleted
	Deleted   bool
}

// ListStreams returns a page of the streams this node has applied, in
// StreamBefore order, from the log's stream index: a page reads one index
// entry per stream listed, never the events, however long the history.
// Streams of the framework ('$' names) are listed only when the prefix
// asks for them. On a thin client the node in use lists them, once it has
// applied what the client has seen.
func (s *Store) ListStreams(ctx context.Context, opt ListStreamsOptions) ([]ListedStream, error) {
	limit := opt.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxListStreams)
	prefix := opt.Prefix
	var out []ListedStream
	if opt.Category != "" {
		prefix = opt.Category + "-"
		// The stream named as its category sorts before every stream of
		// it (it is shorter).
		if opt.After == "" {
			info, err := s.Stream(ctx, opt.Category)
			if err != nil {
				return nil, err
			}
			if info.Version > 0 {
				out = append(out, ListedStream{Stream: info.Stream, Partition: info.Partition, Version: info.Version, Deleted: info.Deleted})
			}
		}
	}
	after := opt.After
	for len(out) < limit {
		want := limit - len(out)
		keys, err := s.log.ListKeys(ctx, prefix, after, want)
		if err != nil {
			return nil, s.readErr(err)
		}
		for _, k := range keys {
			if IsSystemStream(k.Key) && !strings.HasPrefix(prefix, "$") {
				continue
			}
			out = append(out, ListedStream{Stream: k.Key, Partition: k.Partition, Version: k.Seq, Deleted: k.Deleted})
		}
		if len(keys) < want {
			break
		}
		after = keys[len(keys)-1].Key
	}
	return out, nil
}

// StreamBefore reports whether stream a comes before stream b in
// ListStreams' order: shorter names first, then bytewise ("order-9"
// before "order-10").
func StreamBefore(a, b string) bool { return raftlog.KeyBefore(a, b) }
