package core

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/uuid"
)

// idClock is the last (Unix milliseconds << 12 | sequence) NewIDs gave out.
var idClock atomic.Uint64

// NewIDs fills ids with new UUIDv7s (RFC 9562): 48 bits of Unix time in
// milliseconds, a 12-bit sequence that orders the IDs made in one
// millisecond (the RFC's "fixed bit-length dedicated counter"), and 62
// random bits. The IDs one process makes are strictly increasing across
// goroutines: a call reserves its run of (time, sequence) values with one
// compare-and-swap, and a run that exhausts a millisecond's sequence
// borrows from the next one, as the RFC allows. Unlike uuid.NewV7, which
// takes a process-wide mutex and reads the random source once per ID
// (about a tenth of an embedded append's CPU at 64 records per append), a
// call reads the random bits of all its IDs at once.
func NewIDs(ids []uuid.UUID) {
	n := uint64(len(ids))
	if n == 0 {
		return
	}
	first := reserveIDClock(n)
	rand.Read(unsafe.Slice(&ids[0][0], 16*len(ids))) // never fails (crypto/rand)
	for i := range ids {
		stampIDClock(&ids[i], first+uint64(i))
		ids[i][8] = ids[i][8]&0x3f | 0x80
	}
}

// stampIDClock writes the (time, sequence) value v of the ID clock and the
// version, 7, into id's first 8 bytes.
func stampIDClock(id *uuid.UUID, v uint64) {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], v>>12)
	copy(id[:6], ts[2:])
	id[6] = 0x70 | byte(v>>8)&0x0f
	id[7] = byte(v)
}

// reserveIDClock reserves n consecutive (time, sequence) values and
// returns the first.
func reserveIDClock(n uint64) uint64 {
	now := uint64(time.Now().UnixMilli()) << 12
	for {
		last := idClock.Load()
		first := max(last+1, now)
		if idClock.CompareAndSwap(last, first+n-1) {
			return first
		}
	}
}

// NewIDRun fills ids with a run of new UUIDv7s: one (time, sequence) value
// of NewIDs' clock, and 61 random bits in the last 62 that count up by one
// from ids[0] (the top one is 0, so that a run of up to 2^61 never
// overflows). The log's ID index keeps such a run as one entry. The IDs
// are unique as NewIDs' are, and increasing: within the run, and from one
// call to any later call in this process.
func NewIDRun(ids []uuid.UUID) {
	if len(ids) == 0 {
		return
	}
	var head uuid.UUID
	stampIDClock(&head, reserveIDClock(1))
	rand.Read(head[8:])                                         // never fails (crypto/rand)
	base := binary.BigEndian.Uint64(head[8:])&(1<<61-1) | 1<<63 // variant 10, top bit of the 62 clear
	for i := range ids {
		binary.BigEndian.PutUint64(head[8:], base+uint64(i))
		ids[i] = head
	}
}
