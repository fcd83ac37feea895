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

// producerIDSpace is the namespace of the event IDs of idempotent
// producers' records (a name-based UUID of producer, epoch, topic,
// partition and sequence).
var producerIDSpace = uuid.MustParse("6b0a9a1e-3f2c-4d9e-9a7e-6a2f8f2c1d55")

// recordID is the event ID of an idempotent producer's record: the same
// for every retry of the batch, so the log's state machine appends it
// once (see the package documentation).
func recordID(pid int64, epoch int16, topic string, partition int32, seq int32) uuid.UUID {
	b := make([]byte, 0, 24+len(topic))
	b = binary.BigEndian.AppendUint64(b, uint64(pid))
	b = binary.BigEndian.AppendUint16(b, uint16(epoch))
	b = binary.BigEndian.AppendUint32(b, uint32(partition))
	b = binary.BigEndian.AppendUint32(b, uint32(seq))
	b = append(b, topic...)
	return uuid.NewSHA1(producerIDSpace, b)
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
	events := make([]eventstore.EventData, len(b.Records))
	size := 0
	for i := range b.Records {
		size += len(b.Records[i].Value) + len(b.Records[i].Key) + 16
	}
	buf := make([]byte, 0, size)
	for i := range b.Records {
		start := len(buf)
		buf = encodeRecord(buf, &b.Records[i])
		events[i] = eventstore.EventData{Type: recordEventType, Data: buf[start:len(buf):len(buf)]}
		if b.ProducerID >= 0 {
			events[i].ID = recordID(b.ProducerID, b.ProducerEpoch, topic, p.Partition, b.FirstSequence+int32(i))
		}
	}
	first, err := s.appendChunks(ctx, topicStream(topic, p.Partition), events)
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
