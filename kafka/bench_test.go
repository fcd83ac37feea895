package kafka

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
)

// BenchmarkKafkaVsNative measures, in one run per node count, the store's
// own batched appends and a franz-go producer and consumer through the
// listener, with the same records: $KAFKA_BENCH_RECORDS (default
// 1,000,000) of 200 bytes over 8 partitions (streams). Native: 8
// goroutines, one per stream, each appending batches of 500 events.
// franz-go: acks=all (idempotent, its default), linger 5 ms, round-robin
// partitions, its default (snappy) compression; then a consumer reads
// them all from the start. Each
// iteration writes new streams and a new topic; run with -benchtime 1x.
func BenchmarkKafkaVsNative(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("KAFKA_BENCH_RECORDS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err)
	}
	const partitions, batch = 8, 500
	value := make([]byte, 200)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			opt := eventstore.MaxAppendEvents(10_000)
			var store *eventstore.Store
			if nodes == 1 {
				store = eventstoretest.Single(b, opt).Node(0)
			} else {
				c := eventstoretest.StartCluster(b, nodes, opt)
				store = c.Node(c.Leader(b))
			}
			srv, err := Listen(Config{Store: store, Addr: "127.0.0.1:0", MaxRecordsPerAppend: 10_000})
			require.NoError(b, err)
			defer srv.Close()
			ctx := context.Background()
			var native, produce, consume float64
			for it := 0; it < b.N; it++ {
				// Native batched appends.
				start := time.Now()
				var wg sync.WaitGroup
				for p := 0; p < partitions; p++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						stream := fmt.Sprintf("native-%d-%d", it, p)
						evs := make([]eventstore.EventData, batch)
						for i := range evs {
							evs[i] = eventstore.EventData{Type: recordEventType, Data: value}
						}
						for done := 0; done < n/partitions; done += batch {
							for i := range evs {
								evs[i].ID = [16]byte{} // a new ID each append
							}
							_, err := store.Append(ctx, stream, eventstore.Any, evs)
							require.NoError(b, err)
						}
					}()
				}
				wg.Wait()
				native = float64(n) / time.Since(start).Seconds()

				topic := fmt.Sprintf("bench-%d", it)
				admin, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr()))
				require.NoError(b, err)
				createTopic(b, admin, topic, partitions)
				admin.Close()
				prod, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr()), kgo.DefaultProduceTopic(topic),
					kgo.ProducerLinger(5*time.Millisecond), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
				require.NoError(b, err)
				start = time.Now()
				var perr error
				var mu sync.Mutex
				for i := 0; i < n; i++ {
					prod.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
						if err != nil {
							mu.Lock()
							perr = err
							mu.Unlock()
						}
					})
				}
				require.NoError(b, prod.Flush(ctx))
				produce = float64(n) / time.Since(start).Seconds()
				prod.Close()
				require.NoError(b, perr)

				cons, err := kgo.NewClient(kgo.SeedBrokers(srv.Addr()), kgo.ConsumeTopics(topic),
					kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				require.NoError(b, err)
				start = time.Now()
				for got := 0; got < n; {
					fs := cons.PollFetches(ctx)
					fs.EachError(func(_ string, _ int32, err error) { require.NoError(b, err) })
					got += fs.NumRecords()
				}
				consume = float64(n) / time.Since(start).Seconds()
				cons.Close()
			}
			b.ReportMetric(native, "native_rec/s")
			b.ReportMetric(produce, "produce_rec/s")
			b.ReportMetric(consume, "consume_rec/s")
			b.ReportMetric(produce/native, "produce/native")
		})
	}
}

// BenchmarkAppendBatch encodes a fetch's batch of 4,000 records of 200
// bytes (about what a partition answers for 1 MiB), with one header each.
func BenchmarkAppendBatch(b *testing.B) {
	recs := make([]batchRecord, 4000)
	value := make([]byte, 200)
	for i := range recs {
		recs[i] = batchRecord{Offset: int64(i), Record: Record{Timestamp: 1_700_000_000_000 + int64(i),
			Key: []byte("key"), Value: value, Headers: []Header{{Key: "h", Value: []byte("v")}}}}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(recs) * len(value)))
	for b.Loop() {
		appendBatch(nil, 0, int64(len(recs)-1), recs)
	}
}

// BenchmarkDecodeBatch decodes a produced batch of 4,000 records of 200
// bytes (snappy, as franz-go sends them by default) and encodes its
// records as events, as a produce does before its append.
func BenchmarkDecodeBatch(b *testing.B) {
	recs := make([]batchRecord, 4000)
	value := make([]byte, 200)
	for i := range recs {
		recs[i] = batchRecord{Offset: int64(i), Record: Record{Timestamp: 1_700_000_000_000 + int64(i), Value: value}}
	}
	raw := compressedBatch(codecSnappy, appendBatch(nil, 0, int64(len(recs)-1), recs))
	b.ReportAllocs()
	b.SetBytes(int64(len(recs) * len(value)))
	for b.Loop() {
		d, err := decodeBatches(raw, 16<<20)
		if err != nil || len(d.Records) != len(recs) {
			b.Fatal(err)
		}
		if events := batchEvents(&d, "bench", 0); len(events) != len(recs) {
			b.Fatal(len(events))
		}
	}
}
