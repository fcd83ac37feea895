package eventstore

import (
	"fmt"

	"github.com/esraft/esraft/raftlog"
)

// ExpectedVersion is the condition an append (or delete, or truncate)
// makes on the stream's current version. The zero value is Any.
type ExpectedVersion struct {
	kind    expectKind
	version uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectExists
	expectExact
)

var (
	// Any: no condition.
	Any = ExpectedVersion{}
	// NoStream: the stream must have no events, or be deleted.
	NoStream = ExpectedVersion{kind: expectNoStream}
	// StreamExists: the stream must have events and not be deleted.
	StreamExists = ExpectedVersion{kind: expectExists}
)

// Exact: the stream must be at version v (the version of its last event;
// 0 for a stream that never had one).
func Exact(v uint64) ExpectedVersion { return ExpectedVersion{kind: expectExact, version: v} }

// Version returns the exact version expected and whether e is Exact.
func (e ExpectedVersion) Version() (uint64, bool) { return e.version, e.kind == expectExact }

func (e ExpectedVersion) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectExists:
		return "stream exists"
	case expectExact:
		return fmt.Sprintf("version %d", e.version)
	default:
		return "any version"
	}
}

// option is the raftlog condition for e, nil for Any.
func (e ExpectedVersion) option() raftlog.AppendOption {
	switch e.kind {
	case expectNoStream:
		return raftlog.ExpectKeyAbsent()
	case expectExists:
		return raftlog.ExpectKeyExists()
	case expectExact:
		return raftlog.ExpectKeySeq(e.version)
	default:
		return nil
	}
}
