// Package wire holds the JSON messages of the fault-injection node's HTTP
// API (systemtest/faultnode), shared by the node and the suite that drives
// it (systemtest/faulttest).
package wire

import (
	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog"
)

// Expected versions other than an exact one (which is >= 0).
const (
	ExpectAny      int64 = -1
	ExpectNoStream int64 = -2
)

// Outcomes of an append.
const (
	OutcomeOK           = "ok"
	OutcomeWrongVersion = "wrong_version"
	OutcomeUnknown      = "unknown"     // may have been appended
	OutcomeUnavailable  = "unavailable" // nothing was appended
	OutcomeIDConflict   = "id_conflict"
	OutcomeClosed       = "closed"
	OutcomeError        = "error"
)

// AppendRequest is the body of POST /append.
type AppendRequest struct {
	Stream string `json:"stream"`
	// Expect >= 0 is an exact version; ExpectAny or ExpectNoStream.
	Expect    int64   `json:"expect"`
	Events    []Event `json:"events"`
	TimeoutMS int     `json:"timeout_ms"`
}

// Event is an event to append.
type Event struct {
	ID   uuid.UUID `json:"id"`
	Type string    `json:"type"`
	Data []byte    `json:"data"`
}

// AppendResponse is the reply of POST /append.
type AppendResponse struct {
	Outcome      string `json:"outcome"`
	Message      string `json:"message,omitempty"`
	Actual       uint64 `json:"actual,omitempty"` // with OutcomeWrongVersion
	Partition    int    `json:"partition"`
	FirstOffset  uint64 `json:"first_offset"`
	FirstVersion uint64 `json:"first_version"`
	LastVersion  uint64 `json:"last_version"`
	Duplicate    bool   `json:"duplicate"`
	Group        int    `json:"group"`
	Index        uint64 `json:"index"`
}

// ReadEvent is an event as GET /read and GET /stream return it: enough to
// check positions and identity (GET /digest covers every field).
type ReadEvent struct {
	ID        uuid.UUID `json:"id"`
	Stream    string    `json:"stream"`
	Version   uint64    `json:"version"`
	Partition int       `json:"partition"`
	Offset    uint64    `json:"offset"`
}

// ReadResponse is the reply of GET /read and GET /stream.
type ReadResponse struct {
	Events []ReadEvent `json:"events"`
	Next   uint64      `json:"next"`
	Error  string      `json:"error,omitempty"`
}

// HeadResponse is the reply of GET /head: a stream's version on the node
// and the ID of the event at that version (nil if the stream is empty).
// With barrier=1 the node first waits until its reads include every write
// acknowledged anywhere before the request (eventstore's Barrier).
type HeadResponse struct {
	Version uint64    `json:"version"`
	LastID  uuid.UUID `json:"last_id"`
	Error   string    `json:"error,omitempty"`
}

// DigestResponse is the reply of GET /digest.
type DigestResponse struct {
	Hash  string `json:"hash"`
	Count int    `json:"count"`
	Error string `json:"error,omitempty"`
}

// StatusResponse is the reply of GET /status.
type StatusResponse struct {
	PID    int                       `json:"pid"`
	Groups []raftlog.ShardStatus     `json:"groups"` // one per shard
	Heads  []raftlog.PartitionStatus `json:"heads"`
}

// Ready is what a node writes to its ready file once it serves.
type Ready struct {
	PID     int    `json:"pid"`
	Cluster string `json:"cluster"`
	HTTP    string `json:"http"`
}

// The consumer group every node runs a member of (faultnode
// -group-session), and the file in each node's data directory where the
// member records what it does.
const (
	ConsumerGroup      = "faulttest"
	ConsumerRecordFile = "consumer.jsonl"
)

// Kinds of consumer records.
const (
	RecordGrant  = "grant"  // the member started on a partition granted to it
	RecordHandle = "handle" // the handler handled an event
	RecordCommit = "commit" // an attempt to commit a partition's offsets ended
)

// Outcomes of a commit attempt.
const (
	CommitAcked = "acked"
	CommitStale = "stale" // rejected: a stale generation
	CommitError = "error" // unknown outcome, or the log closed
)

// ConsumerRecord is one line of a node's consumer record file, written
// (with one write, O_APPEND) before the member goes on: a handling before
// its offset is committed, a grant before the partition's first event is
// handled. Times are Unix nanoseconds of the machine's one clock.
type ConsumerRecord struct {
	Kind       string `json:"k"`
	Member     string `json:"m"`
	PID        int    `json:"pid"`
	Partition  int    `json:"p"`
	Generation uint64 `json:"g"`
	// Offset is the event's (handle), the offset resumed from (grant) or
	// the offset committed (commit).
	Offset uint64    `json:"o"`
	ID     uuid.UUID `json:"id,omitzero"` // handle
	// Start is when the record's action happened; for a commit, when the
	// request was sent, and End when its outcome was known.
	Start   int64  `json:"s"`
	End     int64  `json:"e,omitempty"`
	Outcome string `json:"out,omitempty"` // commit
	Error   string `json:"err,omitempty"` // commit
}

// GroupResponse is the reply of GET /group: the consumer group as the
// node has applied it.
type GroupResponse struct {
	Found bool               `json:"found"`
	State raftlog.GroupState `json:"state"`
}
