package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/eventstore"
)

// producerIDSpace is the namespace of this package's name-based UUIDs:
// the hash in idempotent producers' record IDs, the brokers' record IDs.
var producerIDSpace = uuid.MustParse("6b0a9a1e-3f2c-4d9e-9a7e-6a2f8f2c1d55")

// producerIDs makes the event IDs of an idempotent producer's records in
// one partition: a UUIDv8 whose first 12 bytes (90 bits, with the version
// and variant) are a name-based hash of producer ID, epoch, topic and
// partition, and whose last 4 are the record's sequence number. A retry
// of a batch carries the same producer, epoch and sequence numbers, so
// its records get the same IDs and the log's state machine appends them
// once (see the package documentation). Only these fields may go in: a
// client may re-encode a batch it retries (kafkajs stamps records without
// a timestamp when it encodes them). The sequence number last makes a
// batch's IDs a run of consecutive IDs, which the log's ID index keeps as
// one entry, and keeps each producer's partition at one place in that
// index instead of all over it as random IDs would be.
type producerIDs struct{ prefix [12]byte }

func newProducerIDs(pid int64, epoch int16, topic string, partition int32) producerIDs {
	b := make([]byte, 0, 14+len(topic))
	b = binary.BigEndian.AppendUint64(b, uint64(pid))
	b = binary.BigEndian.AppendUint16(b, uint16(epoch))
	b = binary.BigEndian.AppendUint32(b, uint32(partition))
	b = append(b, topic...)
	h := uuid.NewSHA1(producerIDSpace, b)
	var p producerIDs
	copy(p.prefix[:], h[:12])
	p.prefix[6] = 0x80 | p.prefix[6]&0x0f // version 8
	p.prefix[8] = 0x80 | p.prefix[8]&0x3f // variant of RFC 9562
	return p
}

// id is the ID of the record with sequence number seq.
func (p producerIDs) id(seq int32) uuid.UUID {
	var u uuid.UUID
	copy(u[:12], p.prefix[:])
	binary.BigEndian.PutUint32(u[12:], uint32(seq))
	return u
}

// errorCode is the Kafka error code of an error of the store or of this
// package.
func errorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errCorrupt):
		return kerr.CorruptMessage.Code
	case errors.Is(err, errTooLarge), errors.Is(err, eventstore.ErrEventTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, eventstore.ErrTooManyEvents), errors.Is(err, eventstore.ErrAppendTooLarge):
		return kerr.RecordListTooLarge.Code
	case errors.Is(err, eventstore.ErrEventIDConflict):
		return kerr.OutOfOrderSequenceNumber.Code
	case errors.Is(err, eventstore.ErrUnknownOutcome), errors.Is(err, context.DeadlineExceeded):
		return kerr.RequestTimedOut.Code
	case errors.Is(err, eventstore.ErrUnavailable):
		return kerr.NotEnoughReplicas.Code
	case errors.Is(err, eventstore.ErrClosed), errors.Is(err, context.Canceled):
		return kerr.NotLeaderForPartition.Code
	case errors.Is(err, errTopicExists):
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, errInvalidTopic):
		return kerr.InvalidTopicException.Code
	default:
		return kerr.UnknownServerError.Code
	}
}

// requestCtx bounds a request by the client's timeout, at most maxWait.
func (s *Server) requestCtx(timeoutMs int32) (context.Context, context.CancelFunc) {
	d := time.Duration(timeoutMs) * time.Millisecond
	if d <= 0 || d > maxWait {
		d = maxWait
	}
	return context.WithTimeout(s.ctx, d)
}

func (s *Server) produce(req request) kmsg.Response {
	r := req.msg.(*kmsg.ProduceRequest)
	resp := r.ResponseKind().(*kmsg.ProduceResponse)
	ctx, cancel := s.requestCtx(r.TimeoutMillis)
	defer cancel()
	var wg sync.WaitGroup
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(r.Topics))
	for i := range r.Topics {
		rt := &r.Topics[i]
		t := &resp.Topics[i]
		*t = kmsg.NewProduceResponseTopic()
		t.Topic = rt.Topic
		t.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		tc, ok, err := s.topics.get(ctx, rt.Topic)
		for j := range rt.Partitions {
			p := &t.Partitions[j]
			*p = kmsg.NewProduceResponseTopicPartition()
			p.Partition = rt.Partitions[j].Partition
			switch {
			case err != nil:
				p.ErrorCode = errorCode(err)
			case rt.Topic == EventsTopic:
				p.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case !ok || p.Partition < 0 || p.Partition >= tc.Partitions:
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
			default:
				wg.Add(1)
				go func(records []byte) {
					defer wg.Done()
					s.produceOne(ctx, rt.Topic, p, records)
				}(rt.Partitions[j].Records)
			}
		}
	}
	wg.Wait()
	if r.Acks == 0 {
		return nil
	}
	return resp
}

// produceOne appends one partition's batch and fills its answer.
func (s *Server) produceOne(ctx context.Context, topic string, p *kmsg.ProduceResponseTopicPartition, raw []byte) {
	p.BaseOffset = -1
	p.LogAppendTime = -1
	b, err := decodeBatches(raw, s.maxBatchBytes())
	if err != nil {
		p.ErrorCode = errorCode(err)
		msg := err.Error()
		p.ErrorMessage = &msg
		return
	}
	if b.Transactional {
		p.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return
	}
	if len(b.Records) == 0 {
		p.ErrorCode = kerr.CorruptMessage.Code
		return
	}
	first, err := s.appendChunks(ctx, topicStream(topic, p.Partition), batchEvents(&b, topic, p.Partition))
	if err != nil {
		p.ErrorCode = errorCode(err)
		if p.ErrorCode == kerr.UnknownServerError.Code {
			s.log.Warn("kafka: produce failed", "topic", topic, "partition", p.Partition, "err", err)
		}
		return
	}
	p.BaseOffset = int64(first) - 1
	if info, err := s.store.Stream(ctx, topicStream(topic, p.Partition)); err == nil && info.First > 0 {
		p.LogStartOffset = int64(info.First) - 1
	}
}

// batchEvents are the events of a produced batch's records in a topic's
// partition: the records encoded (one buffer for all), with their
// producer's IDs if it is idempotent.
func batchEvents(b *decodedBatch, topic string, partition int32) []eventstore.EventData {
	events := make([]eventstore.EventData, len(b.Records))
	size := 0
	for i := range b.Records {
		size += len(b.Records[i].Value) + len(b.Records[i].Key) + 16
	}
	buf := make([]byte, 0, size)
	var ids producerIDs
	if b.ProducerID >= 0 {
		ids = newProducerIDs(b.ProducerID, b.ProducerEpoch, topic, partition)
	}
	for i := range b.Records {
		start := len(buf)
		buf = encodeRecord(buf, &b.Records[i])
		events[i] = eventstore.EventData{Type: recordEventType, Data: buf[start:len(buf):len(buf)]}
		if b.ProducerID >= 0 {
			events[i].ID = ids.id(b.FirstSequence + int32(i))
		}
	}
	return events
}

// appendChunks appends a batch's events in appends of at most
// MaxRecordsPerAppend events and maxChunkBytes, and returns the first
// event's version. Chunks after the first expect the version the previous
// one ended at, under a lock of the stream on this node, so a batch's
// offsets are contiguous; if another node appended to the stream in
// between, the rest goes on unconditioned (every record still once, in
// order, the answer's base offset still the first's). A retried batch
// finds its chunks by their IDs: each returns its original versions.
func (s *Server) appendChunks(ctx context.Context, stream string, events []eventstore.EventData) (uint64, error) {
	mu := &s.streamLocks[streamLockIndex(stream)]
	mu.Lock()
	defer mu.Unlock()
	var first uint64
	expected := eventstore.Any
	for len(events) > 0 {
		n, size := 0, 0
		for n < len(events) && n < s.cfg.MaxRecordsPerAppend && (n == 0 || size+len(events[n].Data) <= maxChunkBytes) {
			size += len(events[n].Data) + 32
			n++
		}
		res, err := s.store.Append(ctx, stream, expected, events[:n])
		if errors.Is(err, eventstore.ErrWrongVersion) && first != 0 {
			res, err = s.store.Append(ctx, stream, eventstore.Any, events[:n])
		}
		if err != nil {
			return 0, err
		}
		if first == 0 {
			first = res.FirstVersion
		}
		expected = eventstore.Exact(res.LastVersion)
		events = events[n:]
	}
	return first, nil
}

// maxChunkBytes bounds the event data of one append of a produced batch,
// under the log's default batch byte limit (8 MiB) with room for the
// events' own fields.
const maxChunkBytes = 4 << 20

func streamLockIndex(stream string) int {
	h := fnv.New32a()
	h.Write([]byte(stream))
	return int(h.Sum32() % streamLockCount)
}

// maxBatchBytes bounds a produced batch's records once decompressed.
func (s *Server) maxBatchBytes() int { return s.cfg.MaxRequestBytes }

func (s *Server) initProducerID(req request) kmsg.Response {
	r := req.msg.(*kmsg.InitProducerIDRequest)
	resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if r.TransactionalID != nil {
		// Transactions are not served: only idempotent producers.
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp
	}
	if r.ProducerID >= 0 && r.ProducerEpoch >= 0 && r.ProducerEpoch < 32767 {
		// KIP-360: a producer that knows its ID bumps its epoch; the
		// sequences of the new epoch start again at 0, and its record
		// IDs differ from the old epoch's.
		resp.ProducerID, resp.ProducerEpoch = r.ProducerID, r.ProducerEpoch+1
		return resp
	}
	ctx, cancel := s.requestCtx(int32(maxWait / time.Millisecond))
	defer cancel()
	res, err := s.store.Append(ctx, producersStream, eventstore.Any,
		[]eventstore.EventData{{Type: "kafka.producer"}})
	if err != nil {
		resp.ErrorCode = errorCode(err)
		return resp
	}
	resp.ProducerID, resp.ProducerEpoch = int64(res.FirstVersion), 0
	return resp
}
