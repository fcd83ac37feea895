package kafka

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
)

// envRecords is the record count of the franz-go tests: $KAFKA_TEST_RECORDS
// (the 100,000) or def for CI.
func envRecords(t *testing.T, def int) int {
	if v := os.Getenv("KAFKA_TEST_RECORDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		return n
	}
	return def
}

func newClient(t *testing.T, srv *Server, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(srv.Addr())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// consumeAll reads topic from the beginning until n records arrived and
// returns how often each value was seen, checking offsets are dense per
// partition.
func consumeAll(t *testing.T, srv *Server, topic string, n int) map[string]int {
	t.Helper()
	cl := newClient(t, srv, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]int{}
	next := map[int32]int64{}
	total := 0
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for total < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records", total, n)
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			require.Equal(t, next[r.Partition], r.Offset, "partition %d offsets are dense", r.Partition)
			next[r.Partition] = r.Offset + 1
			seen[string(r.Value)]++
			total++
		})
	}
	return seen
}

// createTopic creates topic with CreateTopics.
func createTopic(t testing.TB, cl *kgo.Client, topic string, partitions int32) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, -1
	req.Topics = []kmsg.CreateTopicsRequestTopic{rt}
	req.TimeoutMillis = 10_000
	resp, err := req.RequestWith(context.Background(), cl)
	require.NoError(t, err)
	require.Zero(t, resp.Topics[0].ErrorCode, "create %s", topic)
}

func TestFranzIdempotentSnappyProducer(t *testing.T) {
	srv, _ := startServer(t)
	n := envRecords(t, 20_000)
	createTopic(t, newClient(t, srv), "idem", 3)
	cl := newClient(t, srv, kgo.DefaultProduceTopic("idem"),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()), kgo.ProducerLinger(5*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 97)), Value: []byte("r" + strconv.Itoa(i))},
			func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
				wg.Done()
			})
	}
	wg.Wait()
	require.NoError(t, firstErr)
	seen := consumeAll(t, srv, "idem", n)
	require.Len(t, seen, n)
	for v, c := range seen {
		require.Equal(t, 1, c, "record %s", v)
	}
}

// produceRaw sends one produce request holding batch for topic partition 0
// and returns the answer.
func produceRaw(t *testing.T, cl *kgo.Client, topic string, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10_000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{rp}
	req.Topics = []kmsg.ProduceRequestTopic{rt}
	resp, err := req.RequestWith(context.Background(), cl)
	require.NoError(t, err)
	return resp.Topics[0].Partitions[0]
}

// producerBatch is a batch of values from an idempotent producer.
func producerBatch(pid int64, epoch int16, seq int32, values ...string) []byte {
	recs := make([]batchRecord, len(values))
	for i, v := range values {
		recs[i] = batchRecord{Offset: int64(i), Record: Record{Timestamp: 1, Value: []byte(v)}}
	}
	b := appendBatch(nil, 0, int64(len(values)-1), recs)
	binary.BigEndian.PutUint64(b[43:], uint64(pid))
	binary.BigEndian.PutUint16(b[51:], uint16(epoch))
	binary.BigEndian.PutUint32(b[53:], uint32(seq))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[crcStart:], castagnoli))
	return b
}

func TestRetriedBatchIsWrittenOnce(t *testing.T) {
	srv, store := startServer(t)
	cl := newClient(t, srv)
	req := kmsg.NewPtrInitProducerIDRequest()
	ip, err := req.RequestWith(context.Background(), cl)
	require.NoError(t, err)
	require.Zero(t, ip.ErrorCode)
	createTopic(t, cl, "retry", 1)

	first := produceRaw(t, cl, "retry", producerBatch(ip.ProducerID, ip.ProducerEpoch, 0, "a", "b"))
	require.Zero(t, first.ErrorCode)
	other := produceRaw(t, cl, "retry", producerBatch(ip.ProducerID, ip.ProducerEpoch, 2, "c"))
	require.Zero(t, other.ErrorCode)
	// The first batch again, as a producer retries after a lost answer:
	// the original offsets, nothing appended.
	again := produceRaw(t, cl, "retry", producerBatch(ip.ProducerID, ip.ProducerEpoch, 0, "a", "b"))
	require.Zero(t, again.ErrorCode)
	require.Equal(t, first.BaseOffset, again.BaseOffset)
	info, err := store.Stream(context.Background(), topicStream("retry", 0))
	require.NoError(t, err)
	require.Equal(t, uint64(3), info.Version, "three records, each once")
	// A batch whose sequences were partly written (2 was, 3 was not) is
	// refused whole: the producer sent something other than a retry.
	bad := produceRaw(t, cl, "retry", producerBatch(ip.ProducerID, ip.ProducerEpoch, 2, "c", "d"))
	require.Equal(t, kerr.OutOfOrderSequenceNumber.Code, bad.ErrorCode)
	info, err = store.Stream(context.Background(), topicStream("retry", 0))
	require.NoError(t, err)
	require.Equal(t, uint64(3), info.Version, "nothing of the refused batch was written")
}

// cuttable is a dialer whose connections can all be cut at once, to kill
// a client without letting it leave its group.
type cuttable struct {
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func (c *cuttable) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, fmt.Errorf("cut")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cuttable) cutAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		conn.Close()
	}
}

func TestFranzCooperativeGroupExactlyOnceAcrossKill(t *testing.T) {
	srv, _ := startServer(t)
	runCooperativeGroup(t, []*Server{srv}, envRecords(t, 20_000))
}

// TestGroupAcrossNodes: three nodes, each with a listener, and a member
// seeded with each: they all find the one coordinator (the listener of
// shard 0's leader) and share the partitions as one group.
func TestGroupAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster")
	}
	c := eventstoretest.StartCluster(t, 3, eventstore.MaxAppendEvents(10_000))
	var servers []*Server
	for i := 0; i < 3; i++ {
		srv, err := Listen(Config{Store: c.Node(i), Addr: "127.0.0.1:0", MaxRecordsPerAppend: 10_000})
		require.NoError(t, err)
		t.Cleanup(func() { srv.Close() })
		servers = append(servers, srv)
	}
	runCooperativeGroup(t, servers, 5_000)
}

// runCooperativeGroup produces n records to a topic of 6 partitions and
// consumes them with a 3-member cooperative-sticky group, member i
// connected to servers[i mod len], one member killed half way: every
// record is counted once (see below).
func runCooperativeGroup(t *testing.T, servers []*Server, n int) {
	srv := servers[0]
	createTopic(t, newClient(t, srv), "coop", 6)
	prod := newClient(t, srv, kgo.DefaultProduceTopic("coop"), kgo.ProducerLinger(5*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			r := &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte("c" + strconv.Itoa(i))}
			prod.Produce(ctx, r, func(_ *kgo.Record, err error) { require.NoError(t, err) })
		}
		require.NoError(t, prod.Flush(ctx))
	}
	produce(0, n/2)

	// counted: records whose commit succeeded, by value; a record is
	// counted by the member that committed it, so a member killed after
	// reading and before committing leaves its records to the others.
	var mu sync.Mutex
	counted := map[string]int{}
	// For a failure's message: per partition, the records counted and the
	// next offset after the last one committed.
	perPart := map[int32]int{}
	nextOff := map[int32]int64{}
	type member struct {
		cl     *kgo.Client
		dialer *cuttable
		stop   chan struct{}
		done   chan struct{}
	}
	start := func(i int) *member {
		m := &member{dialer: &cuttable{}, stop: make(chan struct{}), done: make(chan struct{})}
		m.cl = newClient(t, servers[i%len(servers)], kgo.ConsumerGroup("coop-group"), kgo.ConsumeTopics("coop"),
			kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.DisableAutoCommit(),
			kgo.SessionTimeout(3*time.Second), kgo.HeartbeatInterval(300*time.Millisecond),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.Dialer(m.dialer.dial),
			kgo.FetchMaxWait(200*time.Millisecond))
		go func() {
			defer close(m.done)
			for {
				pctx, pcancel := context.WithTimeout(ctx, time.Second)
				fs := m.cl.PollFetches(pctx)
				pcancel()
				select {
				case <-m.stop: // killed between reading and committing
					return
				default:
				}
				recs := fs.Records()
				if len(recs) == 0 {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				if err := m.cl.CommitRecords(ctx, recs...); err != nil {
					continue // not counted: read again by this or another member
				}
				mu.Lock()
				for _, r := range recs {
					counted[string(r.Value)]++
					perPart[r.Partition]++
					nextOff[r.Partition] = max(nextOff[r.Partition], r.Offset+1)
				}
				mu.Unlock()
			}
		}()
		return m
	}
	members := []*member{start(0), start(1), start(2)}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(counted)
	}
	waitFor(t, 60*time.Second, func() bool { return total() >= n/4 }, func() string {
		return fmt.Sprintf("%d of %d records counted", total(), n/4)
	})
	if len(servers) > 1 {
		// One node coordinates the group, whichever node each member
		// was seeded with.
		waitFor(t, 10*time.Second, func() bool {
			holding := 0
			for _, srv := range servers {
				srv.groups.mu.Lock()
				if g := srv.groups.groups["coop-group"]; g != nil && len(g.members) > 0 {
					holding += len(g.members) * 10
					if len(g.members) != 3 {
						holding++
					}
				}
				srv.groups.mu.Unlock()
			}
			return holding == 30
		}, func() string { return "the group's members are not all on one node" })
	}
	// Kill one member: no LeaveGroup, its connections cut.
	killed := members[0]
	close(killed.stop)
	killed.dialer.cutAll()
	<-killed.done
	produce(n/2, n)
	waitFor(t, 60*time.Second, func() bool { return total() >= n }, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("%d of %d records counted; per partition, counted and next committed offset: %v %v",
			len(counted), n, perPart, nextOff)
	})
	for _, m := range members[1:] {
		close(m.stop)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, counted, n)
	for v, c := range counted {
		require.Equal(t, 1, c, "record %s counted %d times", v, c)
	}
}

func TestLargeBatchSplitsIntoContiguousAppends(t *testing.T) {
	srv, store := startServer(t, func(c *Config) { c.MaxRecordsPerAppend = 2 })
	cl := newClient(t, srv)
	createTopic(t, cl, "split", 1)
	req := kmsg.NewPtrInitProducerIDRequest()
	ip, err := req.RequestWith(context.Background(), cl)
	require.NoError(t, err)
	batch := producerBatch(ip.ProducerID, ip.ProducerEpoch, 0, "a", "b", "c", "d", "e")
	first := produceRaw(t, cl, "split", batch)
	require.Zero(t, first.ErrorCode)
	again := produceRaw(t, cl, "split", batch)
	require.Zero(t, again.ErrorCode)
	require.Equal(t, first.BaseOffset, again.BaseOffset)
	evs, err := store.ReadStream(context.Background(), topicStream("split", 0), 1, 100)
	require.NoError(t, err)
	var got []string
	for _, e := range evs {
		r, err := decodeRecord(e.Data)
		require.NoError(t, err)
		got = append(got, string(r.Value))
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, got, "three appends, in order, each once")
}

func TestDescribeAndListGroups(t *testing.T) {
	srv, _ := startServer(t)
	cl := newClient(t, srv)
	createTopic(t, cl, "described", 2)
	member := newClient(t, srv, kgo.ConsumerGroup("described-group"), kgo.ConsumeTopics("described"),
		kgo.FetchMaxWait(100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var desc *kmsg.DescribeGroupsResponse
	waitFor(t, 20*time.Second, func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		member.PollFetches(pctx) // joins and keeps the member's session
		pcancel()
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{"described-group", "no-such-group"}
		var err error
		desc, err = req.RequestWith(ctx, cl)
		return err == nil && desc.Groups[0].State == "Stable"
	}, func() string { return fmt.Sprintf("%+v", desc) })
	g := desc.Groups[0]
	require.Equal(t, "consumer", g.ProtocolType)
	require.Len(t, g.Members, 1)
	require.NotEmpty(t, g.Members[0].MemberAssignment)
	require.Equal(t, "Dead", desc.Groups[1].State)

	list, err := kmsg.NewPtrListGroupsRequest().RequestWith(ctx, cl)
	require.NoError(t, err)
	var names []string
	for _, lg := range list.Groups {
		names = append(names, lg.Group+"="+lg.GroupState)
	}
	require.Contains(t, names, "described-group=Stable")
}

func TestGroupsHeldInMemoryAreBounded(t *testing.T) {
	srv, _ := startServer(t)
	srv.groups.mu.Lock()
	srv.groups.maxGroups = 5
	srv.groups.mu.Unlock()
	// No retries: a refused group name answers COORDINATOR_NOT_AVAILABLE,
	// which the client would otherwise retry for 20 s or more.
	cl := newClient(t, srv, kgo.RequestRetries(0))
	fetch := func(group string) int16 {
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Group = group
		resp, err := req.RequestWith(context.Background(), cl)
		require.NoError(t, err)
		return resp.ErrorCode
	}
	for i := 0; i < 5; i++ {
		require.Zero(t, fetch(fmt.Sprintf("g%d", i)))
	}
	require.Equal(t, kerr.CoordinatorNotAvailable.Code, fetch("one-too-many"), "a sixth group name is refused")
	require.Zero(t, fetch("g0"), "a group held already is served")
	// Empty groups unused for idleGroupTimeout are dropped: make them old.
	srv.groups.mu.Lock()
	for _, g := range srv.groups.groups {
		g.lastUsed = time.Now().Add(-2 * idleGroupTimeout)
	}
	srv.groups.mu.Unlock()
	waitFor(t, 5*time.Second, func() bool {
		srv.groups.mu.Lock()
		defer srv.groups.mu.Unlock()
		return len(srv.groups.groups) == 0
	}, func() string { return "idle groups were not dropped" })
	require.Zero(t, fetch("one-too-many"))
}

func TestRetentionDropsOldRecords(t *testing.T) {
	srv, _ := startServer(t)
	cl := newClient(t, srv)
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "short-lived", 1, -1
	cfg := kmsg.NewCreateTopicsRequestTopicConfig()
	cfg.Name, cfg.Value = "retention.ms", kmsg.StringPtr("60000")
	rt.Configs = []kmsg.CreateTopicsRequestTopicConfig{cfg}
	req.Topics = []kmsg.CreateTopicsRequestTopic{rt}
	resp, err := req.RequestWith(context.Background(), cl)
	require.NoError(t, err)
	require.Zero(t, resp.Topics[0].ErrorCode)
	for i := 0; i < 3; i++ {
		require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Topic: "short-lived", Value: []byte("old")}).FirstErr())
	}
	ctx := context.Background()
	// Nothing is older than a minute yet.
	require.NoError(t, srv.enforceRetention(ctx, time.Now()))
	st, err := srv.partitionInfo(ctx, "short-lived", 0)
	require.NoError(t, err)
	require.Equal(t, partitionState{logStart: 0, high: 3}, st)
	// Two minutes later every record is (the one just produced too).
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "short-lived", Value: []byte("new")}).FirstErr())
	require.NoError(t, srv.enforceRetention(ctx, time.Now().Add(2*time.Minute)))
	st, err = srv.partitionInfo(ctx, "short-lived", 0)
	require.NoError(t, err)
	require.Equal(t, int64(4), st.high)
	require.Equal(t, int64(4), st.logStart, "the records older than the retention are gone")

	// A client at offset 0 is told it is out of range; earliest is 4.
	lo := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = "short-lived"
	lp := kmsg.NewListOffsetsRequestTopicPartition()
	lp.Timestamp = -2
	lt.Partitions = []kmsg.ListOffsetsRequestTopicPartition{lp}
	lo.Topics = []kmsg.ListOffsetsRequestTopic{lt}
	lresp, err := lo.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.Equal(t, int64(4), lresp.Topics[0].Partitions[0].Offset)
}
