package raftlog

import "github.com/google/uuid"

// LocateID returns the partition and offset of the record whose ID is id
// on this replica. The log knows a record's ID as long as it remembers it
// for deduplication (Config.IDRetention, 24 h by default): found is false
// for an ID it never had or has forgotten since.
func (l *Log) LocateID(id uuid.UUID) (p Partition, offset uint64, found bool, err error) {
	if l.isClosed() {
		return 0, 0, false, ErrClosed
	}
	for _, s := range l.shards {
		e, ok, err := s.engine.LookupID(id)
		if err != nil || ok {
			return e.Partition, e.Offset, ok, err
		}
	}
	return 0, 0, false, nil
}
