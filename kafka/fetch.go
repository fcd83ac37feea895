package kafka

import (
	"context"
	"errors"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/eventstore"
)

// fetchRecordsPerRead bounds the events read from the store per partition
// and round of a fetch.
const fetchRecordsPerRead = 2000

// partitionState is a topic partition's offsets on this node.
type partitionState struct {
	logStart, high int64
}

// partitionInfo returns the offsets of a topic partition (of EventsTopic:
// the log partition's).
func (s *Server) partitionInfo(ctx context.Context, topic string, partition int32) (partitionState, error) {
	if topic == EventsTopic {
		h, err := s.store.Head(eventstore.Partition(partition))
		return partitionState{logStart: 0, high: int64(h)}, err
	}
	info, err := s.store.Stream(ctx, topicStream(topic, partition))
	if err != nil {
		return partitionState{}, err
	}
	ps := partitionState{high: int64(info.Version)}
	if info.First > 1 {
		ps.logStart = int64(info.First) - 1
	}
	return ps, nil
}

// checkPartition returns the error code for a topic partition a client
// names: unknown topic or partition, or none.
func (s *Server) checkPartition(ctx context.Context, topic string, partition int32) int16 {
	if topic == EventsTopic {
		if partition < 0 || int(partition) >= s.store.Partitions() {
			return kerr.UnknownTopicOrPartition.Code
		}
		return 0
	}
	tc, ok, err := s.topics.get(ctx, topic)
	if err != nil {
		return errorCode(err)
	}
	if !ok || partition < 0 || partition >= tc.Partitions {
		return kerr.UnknownTopicOrPartition.Code
	}
	return 0
}

// readRecords reads up to maxBytes of records of a topic partition from
// offset (at least one record if there is one, as KIP-74 asks), with their
// size and the last offset read (-1: none); offsets up to it without a
// record were skipped (EventsTopic skips the framework's own streams).
func (s *Server) readRecords(ctx context.Context, topic string, partition int32, offset int64, maxBytes int) ([]batchRecord, int, int64, error) {
	var out []batchRecord
	size := 0
	last := int64(-1)
	limit := fetchRecordsPerRead
	if topic == EventsTopic {
		from := uint64(offset)
		for size < maxBytes {
			evs, next, err := s.store.ReadPartition(ctx, eventstore.Partition(partition), from, limit)
			if err != nil {
				return nil, 0, 0, err
			}
			for i := range evs {
				e := &evs[i]
				if eventstore.IsSystemStream(e.Stream) {
					last = int64(e.Offset)
					continue // Kafka topics' records and the framework's own
				}
				br := eventRecord(e)
				n := len(br.Key) + len(br.Value) + 32
				if size > 0 && size+n > maxBytes {
					return out, size, last, nil
				}
				size += n
				out = append(out, br)
				last = int64(e.Offset)
			}
			if len(evs) < limit || next == from {
				break
			}
			from = next
		}
		return out, size, last, nil
	}
	stream := topicStream(topic, partition)
	from := uint64(offset) + 1
	// add takes an event of the stream; false once maxBytes is reached.
	add := func(e *eventstore.Event) (bool, error) {
		r, err := decodeRecord(e.Data)
		if err != nil {
			return false, err
		}
		n := len(r.Key) + len(r.Value) + 32
		for _, h := range r.Headers {
			n += len(h.Key) + len(h.Value)
		}
		if size > 0 && size+n > maxBytes {
			return false, nil
		}
		size += n
		last = int64(e.Version) - 1
		out = append(out, batchRecord{Offset: last, Record: r})
		return true, nil
	}
	// The first record by the stream index gives its place in the log
	// partition; from there the partition is read in order (sequential,
	// many times cheaper than one index lookup per record) while most of
	// what it holds is this stream's.
	evs, err := s.store.ReadStream(ctx, stream, from, 1)
	if err != nil || len(evs) == 0 {
		return out, size, last, err
	}
	lp, logOffset := evs[0].Partition, evs[0].Offset
	for size < maxBytes {
		page, next, err := s.store.ReadPartition(ctx, lp, logOffset, limit)
		if err != nil {
			return nil, 0, 0, err
		}
		matched := 0
		for i := range page {
			e := &page[i]
			if e.Stream != stream {
				continue
			}
			if e.Version != from {
				return out, size, last, nil // a gap: the next fetch starts there
			}
			ok, err := add(e)
			if err != nil || !ok {
				return out, size, last, err
			}
			from++
			matched++
		}
		if len(page) < limit || next == logOffset {
			return out, size, last, nil
		}
		logOffset = next
		if matched*4 < len(page) {
			break // mostly other streams: the stream index is cheaper
		}
	}
	for size < maxBytes {
		evs, err := s.store.ReadStream(ctx, stream, from, limit)
		if err != nil {
			return nil, 0, 0, err
		}
		for i := range evs {
			ok, err := add(&evs[i])
			if err != nil || !ok {
				return out, size, last, err
			}
		}
		if len(evs) < limit {
			break
		}
		from = evs[len(evs)-1].Version + 1
	}
	return out, size, last, nil
}

// eventRecord is an event of the store as a record of EventsTopic: key =
// stream, value = data, headers = type, correlation and causation IDs,
// schema version, and the event's own headers.
func eventRecord(e *eventstore.Event) batchRecord {
	r := batchRecord{Offset: int64(e.Offset)}
	r.Timestamp = e.Time.UnixMilli()
	r.Key = []byte(e.Stream)
	r.Value = e.Data
	if r.Value == nil {
		r.Value = []byte{}
	}
	r.Headers = append(r.Headers, Header{Key: "esraft.type", Value: []byte(e.Type)},
		Header{Key: "esraft.id", Value: []byte(e.ID.String())},
		Header{Key: "esraft.version", Value: []byte(strconv.FormatUint(e.Version, 10))})
	if e.Metadata.CorrelationID != "" {
		r.Headers = append(r.Headers, Header{Key: "esraft.correlation_id", Value: []byte(e.Metadata.CorrelationID)})
	}
	if e.Metadata.CausationID != "" {
		r.Headers = append(r.Headers, Header{Key: "esraft.causation_id", Value: []byte(e.Metadata.CausationID)})
	}
	names := make([]string, 0, len(e.Metadata.Headers))
	for k := range e.Metadata.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		r.Headers = append(r.Headers, Header{Key: k, Value: []byte(e.Metadata.Headers[k])})
	}
	return r
}

func (s *Server) fetch(req request) kmsg.Response {
	r := req.msg.(*kmsg.FetchRequest)
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	if r.SessionEpoch > 0 {
		// No fetch sessions are kept (every answer has session ID 0), so
		// an incremental fetch names a session this node does not hold.
		resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
		return resp
	}
	wait := time.Duration(r.MaxWaitMillis) * time.Millisecond
	if wait > maxWait {
		wait = maxWait
	}
	deadline := time.Now().Add(wait)
	ctx, cancel := context.WithDeadline(s.ctx, deadline.Add(5*time.Second))
	defer cancel()
	maxBytes := int(r.MaxBytes)
	if maxBytes <= 0 || maxBytes > maxFetchBytes {
		maxBytes = maxFetchBytes
	}
	for {
		// The log partitions' heads before the read: a record applied
		// after it moves one of them, and wakes the wait below.
		heads := map[eventstore.Partition]uint64{}
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				lp := s.logPartition(t.Topic, p.Partition)
				if lp < 0 {
					continue
				}
				if _, ok := heads[lp]; !ok {
					h, err := s.store.Head(lp)
					if err == nil {
						heads[lp] = h
					}
				}
			}
		}
		total := s.fetchOnce(ctx, r, resp, maxBytes)
		if total >= int(r.MinBytes) || !time.Now().Before(deadline) || anyError(resp) {
			return resp
		}
		if !s.waitAny(ctx, heads, deadline) {
			return resp
		}
	}
}

func anyError(resp *kmsg.FetchResponse) bool {
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return true
			}
		}
	}
	return false
}

// logPartition is the log partition a topic partition's records are in,
// -1 for an unknown one.
func (s *Server) logPartition(topic string, partition int32) eventstore.Partition {
	if topic == EventsTopic {
		if partition < 0 || int(partition) >= s.store.Partitions() {
			return -1
		}
		return eventstore.Partition(partition)
	}
	return s.store.PartitionOf(topicStream(topic, partition))
}

// waitAny waits until one of the log partitions grows past its head or
// the deadline passes; false if the server is closing.
func (s *Server) waitAny(ctx context.Context, heads map[eventstore.Partition]uint64, deadline time.Time) bool {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	woke := make(chan struct{}, len(heads))
	src := s.store.Source()
	for p, h := range heads {
		go func() {
			if src.Wait(wctx, p, h) == nil {
				woke <- struct{}{}
			}
		}()
	}
	select {
	case <-woke:
	case <-wctx.Done():
	}
	return s.ctx.Err() == nil
}

// fetchOnce fills resp from the store and returns the bytes of records.
//
// A partition's budget is its PartitionMaxBytes, at most what is left of
// maxBytes after the partitions before it, as if they were read in turn.
// The first partitions whose PartitionMaxBytes fit in maxBytes together
// are read concurrently (a read is CPU: decoding stored records, encoding
// them as a batch), each as if it were first, then put in order: one that
// the partitions before it left less room than it read is read again with
// what is left, one they left no room is dropped, as a read in turn would
// have done. The partitions after those are read in turn. When maxBytes
// does not bind, nothing is read twice.
func (s *Server) fetchOnce(ctx context.Context, r *kmsg.FetchRequest, resp *kmsg.FetchResponse, maxBytes int) int {
	var reads []*partitionRead
	resp.Topics = resp.Topics[:0]
	for _, rt := range r.Topics {
		t := kmsg.NewFetchResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewFetchResponseTopicPartition()
			p.RecordBatches = []byte{}
			p.Partition = rp.Partition
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = -1, -1, -1
			if code := s.checkPartition(ctx, rt.Topic, rp.Partition); code != 0 {
				p.ErrorCode = code
				t.Partitions = append(t.Partitions, p)
				continue
			}
			st, err := s.partitionInfo(ctx, rt.Topic, rp.Partition)
			if err != nil {
				p.ErrorCode = errorCode(err)
				t.Partitions = append(t.Partitions, p)
				continue
			}
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = st.high, st.high, st.logStart
			switch {
			case rp.FetchOffset < st.logStart || rp.FetchOffset > st.high:
				p.ErrorCode = kerr.OffsetOutOfRange.Code
			case rp.FetchOffset < st.high:
				pmax := int(rp.PartitionMaxBytes)
				if pmax <= 0 || pmax > maxBytes {
					pmax = maxBytes
				}
				reads = append(reads, &partitionRead{topic: rt.Topic, partition: rp.Partition,
					offset: rp.FetchOffset, budget: pmax, topicIndex: len(resp.Topics), index: len(t.Partitions)})
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	// The first reads whose budgets fit in maxBytes together go
	// concurrently: the memory held is what the answer may hold anyway.
	ahead, sum := 0, 0
	for ahead < len(reads) && (ahead == 0 || sum+reads[ahead].budget <= maxBytes) {
		sum += reads[ahead].budget
		ahead++
	}
	s.readConcurrently(ctx, reads[:ahead])
	total := 0
	for i, rd := range reads {
		if total >= maxBytes {
			break
		}
		left := maxBytes - total
		switch {
		case i >= ahead:
			rd.budget = min(rd.budget, left)
			rd.read(ctx, s)
		case rd.budget > left && rd.n >= left:
			rd.budget = left
			rd.read(ctx, s)
		}
		p := &resp.Topics[rd.topicIndex].Partitions[rd.index]
		if rd.err != nil && !errors.Is(rd.err, context.DeadlineExceeded) {
			p.ErrorCode = errorCode(rd.err)
			s.log.Warn("kafka: fetch failed", "topic", rd.topic, "partition", rd.partition, "err", rd.err)
		}
		if rd.last >= rd.offset {
			p.RecordBatches = rd.batch
			total += rd.n + 1 // a batch of skipped offsets is progress too
		}
	}
	return total
}

// partitionRead is one partition's read of a fetch: what to read, where
// its answer goes in the response, and what was read.
type partitionRead struct {
	topic             string
	partition         int32
	offset            int64
	budget            int
	topicIndex, index int

	batch []byte // the records read, encoded: set if last >= offset
	n     int
	last  int64
	err   error
}

// read reads the partition and encodes what it read as a batch.
func (rd *partitionRead) read(ctx context.Context, s *Server) {
	var recs []batchRecord
	recs, rd.n, rd.last, rd.err = s.readRecords(ctx, rd.topic, rd.partition, rd.offset, rd.budget)
	rd.batch = nil
	if rd.last >= rd.offset {
		rd.batch = appendBatch(nil, rd.offset, rd.last, recs)
	}
}

// readConcurrently runs reads on up to GOMAXPROCS goroutines.
func (s *Server) readConcurrently(ctx context.Context, reads []*partitionRead) {
	workers := min(len(reads), runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for _, rd := range reads {
			rd.read(ctx, s)
		}
		return
	}
	next := make(chan *partitionRead, len(reads))
	for _, rd := range reads {
		next <- rd
	}
	close(next)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rd := range next {
				rd.read(ctx, s)
			}
		}()
	}
	wg.Wait()
}
