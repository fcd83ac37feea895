package kafka

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFetchBudgetsAcrossPartitions checks that a fetch reading its
// partitions concurrently answers what reading them in turn does: each
// partition gets its PartitionMaxBytes, at most what the partitions
// before it left of MaxBytes (at least one record while any is left), and
// none once nothing is left. A record counts len(key)+len(value)+32 bytes:
// the records here are 132 bytes, 10 per partition.
func TestFetchBudgetsAcrossPartitions(t *testing.T) {
	srv, _ := startServer(t)
	cl := newClient(t, srv, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	createTopic(t, cl, "budget", 4)
	small := strings.Repeat("v", 100)
	for p := int32(0); p < 4; p++ {
		for i := 0; i < 10; i++ {
			v := small
			if p == 0 && i == 0 {
				v = strings.Repeat("L", 1000) // 1,032 bytes: over a 700-byte partition budget
			}
			require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Topic: "budget", Partition: p, Value: []byte(v)}).FirstErr())
		}
	}
	fetch := func(maxBytes, partitionMax int32) []int {
		req := kmsg.NewPtrFetchRequest()
		req.Version = 11
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 0, 1, maxBytes
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "budget"
		for p := int32(0); p < 4; p++ {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, 0, partitionMax
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = []kmsg.FetchRequestTopic{rt}
		resp, err := req.RequestWith(context.Background(), cl)
		require.NoError(t, err)
		require.Len(t, resp.Topics, 1)
		var counts []int
		for i, p := range resp.Topics[0].Partitions {
			require.Equal(t, int32(i), p.Partition, "partitions answered in the order asked")
			require.Zero(t, p.ErrorCode)
			fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: "budget", Partition: p.Partition}, &p, kgo.DefaultDecompressor(), nil)

			require.NoError(t, fp.Err)
			for j, r := range fp.Records {
				require.Equal(t, int64(j), r.Offset, "partition %d from offset 0, dense", i)
			}
			counts = append(counts, len(fp.Records))
		}
		return counts
	}
	// Nothing binds: every record of every partition.
	require.Equal(t, []int{10, 10, 10, 10}, fetch(1<<20, 1<<20))
	// Partition budgets bind (700 bytes: 5 records), then MaxBytes: the
	// first three fit in 2,100 together and are read concurrently.
	// Partition 0's first record alone is over its budget: it comes
	// alone (1,033 bytes counted with the batch), so partition 1 has
	// 1,067 left, more than its budget: 5 records; partition 2 has 406,
	// less than it read alone: read again, 3 records; partition 3, read
	// after them, has 9: one record, as a first one.
	require.Equal(t, []int{1, 5, 3, 1}, fetch(2100, 700))
	// MaxBytes binds at once: 1,400 fits two budgets, and partition 0's
	// large record leaves partition 1 less than it read alone (367 of
	// 700 bytes), so it is read again with that: 2 records; partition 2
	// gets one record, then nothing is left for partition 3.
	require.Equal(t, []int{1, 2, 1, 0}, fetch(1400, 700))
}
