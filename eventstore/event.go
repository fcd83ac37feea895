package eventstore

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog"
)

// EventData is an event to append.
type EventData struct {
	// ID identifies the event. A zero ID is replaced by a new time-ordered
	// UUID. Set it yourself when you may retry the append after an error:
	// appends are idempotent by event ID, so a retry with the same IDs
	// never appends twice.
	ID       uuid.UUID
	Type     string // required: "OrderPlaced"
	Data     []byte // the payload, opaque to the store (usually JSON)
	Metadata Metadata
}

// Metadata travels with an event.
type Metadata struct {
	// CorrelationID names the conversation or request the event belongs to.
	CorrelationID string
	// CausationID names the message (command or event) that caused it.
	CausationID string
	// Headers are free name/value pairs; names must not start with '$'.
	Headers map[string]string
	// SchemaVersion is the version of the event type's schema the event
	// was validated against (0: none). On append it declares the version
	// to validate against (0: the latest); a store with a Validator (see
	// SetValidator) stores the version it validated against instead.
	SchemaVersion int
}

// Partition numbers a partition of the log, 0 .. Store.Partitions()-1:
// the unit of ordering (a stream's events all go to one) and of consumer
// assignment.
type Partition = raftlog.Partition

// Event is a committed event as read back.
type Event struct {
	ID     uuid.UUID
	Stream string
	Type   string
	// Version is the event's position in its stream, from 1.
	Version uint64
	// Partition and Offset are its position in the log: dense per
	// partition, ordered with every other event of the partition.
	Partition Partition
	Offset    uint64
	// Time is stamped by the leader that committed it.
	Time     time.Time
	Data     []byte
	Metadata Metadata
	// Unreadable, when not nil, says why Data is nil: a *ShreddedError
	// (errors.Is ErrShredded) for an event encrypted under a subject key
	// that was shredded (see Encrypt).
	Unreadable error
	// sealed is the key tag of an encrypted event, until it is decrypted.
	sealed string
}

// Category is the part of the stream name before its first '-'
// ("order-42" -> "order"), or the whole name if it has none: the stream's
// top-level category. See InCategory for categories that contain '-'.
func Category(stream string) string {
	if i := strings.IndexByte(stream, '-'); i >= 0 {
		return stream[:i]
	}
	return stream
}

// InCategory reports whether stream belongs to category: the stream is
// named category, or category followed by '-' and anything. Categories are
// prefixes ending at a '-', so they may contain '-' themselves, with no
// escaping: "order-line-7" is in "order-line" and in "order", not in
// "order-li". A subscription's Categories match this way; a category
// whose name is a prefix of another's ("order" of "order-line") therefore
// selects both, so name categories that must stay apart distinctly.
func InCategory(stream, category string) bool {
	return strings.HasPrefix(stream, category) && (len(stream) == len(category) || stream[len(category)] == '-')
}

// IsSystemStream reports whether stream is one of the framework's own
// (its name starts with '$'); subscriptions skip them unless asked.
func IsSystemStream(stream string) bool { return len(stream) > 0 && stream[0] == '$' }

// Record header names for the event's own fields. User headers may not
// start with '$'.
const (
	hdrType        = "$t"
	hdrCorrelation = "$c"
	hdrCausation   = "$k"
	hdrSchema      = "$v"
)

// toRecord converts an event to a log record; headers go in a fixed order
// (type, correlation, causation, schema version, then user headers by
// name). They are appended to hs[:0], and typ, the event type's bytes, is
// the type header's value: a batch's records share one backing array for
// each (records, in store.go).
func toRecord(hs []raftlog.Header, typ []byte, e *EventData, schemaVersion int) raftlog.NewRecord {
	hs = append(hs[:0], raftlog.Header{Key: hdrType, Value: typ})
	if e.Metadata.CorrelationID != "" {
		hs = append(hs, raftlog.Header{Key: hdrCorrelation, Value: []byte(e.Metadata.CorrelationID)})
	}
	if e.Metadata.CausationID != "" {
		hs = append(hs, raftlog.Header{Key: hdrCausation, Value: []byte(e.Metadata.CausationID)})
	}
	if schemaVersion > 0 {
		hs = append(hs, raftlog.Header{Key: hdrSchema, Value: strconv.AppendInt(nil, int64(schemaVersion), 10)})
	}
	if len(e.Metadata.Headers) > 0 {
		names := make([]string, 0, len(e.Metadata.Headers))
		for k := range e.Metadata.Headers {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			hs = append(hs, raftlog.Header{Key: k, Value: []byte(e.Metadata.Headers[k])})
		}
	}
	return raftlog.NewRecord{ID: e.ID, Headers: hs, Value: e.Data}
}

// recordHeaders is the number of headers toRecord gives e's record, at
// most.
func recordHeaders(e *EventData) int { return 4 + len(e.Metadata.Headers) }

// recordType returns the event type of a record without converting it.
func recordType(r *raftlog.Record) []byte {
	for _, h := range r.Headers {
		if h.Key == hdrType {
			return h.Value
		}
	}
	return nil
}

// fromRecord converts a log record to an event.
func fromRecord(r *raftlog.Record) (Event, error) {
	ev := Event{
		ID: r.ID, Stream: r.Key, Version: r.KeySeq, Partition: r.Partition, Offset: r.Offset,
		Time: r.Time, Data: r.Value,
	}
	for _, h := range r.Headers {
		switch h.Key {
		case hdrType:
			ev.Type = string(h.Value)
		case hdrCorrelation:
			ev.Metadata.CorrelationID = string(h.Value)
		case hdrCausation:
			ev.Metadata.CausationID = string(h.Value)
		case hdrSchema:
			// Written by toRecord only; a value that does not parse reads as 0.
			ev.Metadata.SchemaVersion, _ = strconv.Atoi(string(h.Value))
		case hdrSealed:
			ev.sealed = string(h.Value)
		default:
			if ev.Metadata.Headers == nil {
				ev.Metadata.Headers = make(map[string]string, len(r.Headers))
			}
			ev.Metadata.Headers[h.Key] = string(h.Value)
		}
	}
	if ev.Type == "" {
		return Event{}, fmt.Errorf("eventstore: partition %d offset %d holds a record that is not an event (no type)", r.Partition, r.Offset)
	}
	return ev, nil
}
