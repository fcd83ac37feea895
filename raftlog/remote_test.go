package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

func dialRemote(t testing.TB, cfg RemoteConfig) *Remote {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Dial(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// clientPayloads are well-formed payloads of every client call, to be
// cut and corrupted.
func clientPayloads() map[byte][]byte {
	wait := binary.AppendUvarint(nil, 200)
	req := wire.Request{Key: "k", Records: []NewRecord{{ID: [16]byte{1}, Value: []byte("v")}}}
	read := binary.AppendUvarint(append([]byte(nil), wait...), 0) // min index
	read = binary.AppendUvarint(read, 0)                          // partition
	read = binary.AppendUvarint(read, 0)                          // from
	read = binary.AppendUvarint(read, 10)
	read = binary.AppendUvarint(read, 1<<20)
	read = wire.AppendString(append(read, 1), "k")
	op := wire.GroupOp{Op: wire.GopJoin, Group: "g", Member: "m", Session: int64(time.Second)}
	return map[byte][]byte{
		route.MethodClientInfo:       wait,
		route.MethodClientAppend:     wire.EncodeRequest(append([]byte(nil), wait...), &req),
		route.MethodClientRead:       read,
		route.MethodClientKeyInfo:    wire.AppendString(binary.AppendUvarint(binary.AppendUvarint(append([]byte(nil), wait...), 0), 0), "k"),
		route.MethodClientHead:       binary.AppendUvarint(binary.AppendUvarint(append([]byte(nil), wait...), 0), 0),
		route.MethodClientWait:       binary.AppendUvarint(binary.AppendUvarint(append(append([]byte(nil), wait...), route.WaitPartition), 0), 1<<40),
		route.MethodClientBarrier:    binary.AppendUvarint(append([]byte(nil), wait...), 0),
		route.MethodClientGroup:      wire.EncodeGroupOp(append([]byte(nil), wait...), &op),
		route.MethodClientGroupState: wire.AppendString(binary.AppendUvarint(append([]byte(nil), wait...), 0), "g"),
		route.MethodClientAppends:    route.AppendAppends(append([]byte(nil), wait...), [][]byte{wire.EncodeRequest(nil, &req), wire.EncodeRequest(nil, &req)}),
		// one shard seen at 0, prefix "k", after "", at most 10
		route.MethodClientListKeys: binary.AppendUvarint(wire.AppendString(wire.AppendString(binary.AppendUvarint(binary.AppendUvarint(append([]byte(nil), wait...), 1), 0), "k"), ""), 10),
	}
}

// Whatever a client sends, the node answers with a typed error or a
// result and goes on serving: truncated, corrupted and random payloads of
// every client call append nothing and crash nothing.
func TestClientCallsRejectMalformedPayloads(t *testing.T) {
	c := newCluster(t, 1, nil)
	l := c.node(0)
	addr := c.addrs(0)[0]
	o := newOutsider(t, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	calls := 0
	for code, good := range clientPayloads() {
		var bad [][]byte
		for n := range len(good) {
			bad = append(bad, good[:n]) // every truncation
		}
		// Corrupted and random bodies keep the 200 ms bound the payload
		// starts with (a longer one is the client's to ask for, and is
		// bounded by the node: TestClientCallsBounded).
		prefix := len(binary.AppendUvarint(nil, 200))
		for range 50 {
			if len(good) > prefix {
				b := append([]byte(nil), good...)
				b[prefix+rng.IntN(len(b)-prefix)] ^= byte(1 + rng.IntN(255))
				bad = append(bad, b)
			}
			junk := append([]byte(nil), good[:prefix]...)
			for range rng.IntN(64) {
				junk = append(junk, byte(rng.Uint32()))
			}
			bad = append(bad, junk)
		}
		bad = append(bad, append(append([]byte(nil), good...), 0xff)) // trailing bytes
		// Concurrently: a corrupted minimum index makes a read wait out
		// its 200 ms bound.
		var wg sync.WaitGroup
		for _, p := range bad {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := o.call(addr, code, p)
				if !assert.NoError(t, err, "method %d: the node answers", code) {
					return
				}
				if _, rerr := route.ClientResult(resp); rerr != nil {
					// A typed error: the payload's, or what the call met.
					assert.True(t, typedError(rerr), "method %d: %v", code, rerr)
				}
			}()
		}
		wg.Wait()
		calls += len(bad)
	}
	t.Logf("%d malformed client calls answered", calls)
	// The node still serves, and the only appends that went through are
	// well-formed requests (a corrupted byte may still decode as one).
	r := dialRemote(t, RemoteConfig{Addrs: []string{addr}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := r.Append(ctx, "after", []NewRecord{{Value: []byte("x")}})
	require.NoError(t, err)
	recs, err := l.Read(ctx, res.Partition, res.FirstOffset, ReadOptions{})
	require.NoError(t, err)
	require.Equal(t, "after", recs[0].Key)
}

// The node serves at most MaxClientCalls client calls at once: more long
// polls than that are refused at once with ErrBusy (which a Remote
// retries), the ones admitted end within their bound, and the node's
// goroutines return to their baseline.
func TestClientCallsBounded(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) { cfg.MaxClientCalls = 8 })
	addr := c.addrs(0)[0]
	o := newOutsider(t, nil)
	_, err := o.call(addr, route.MethodClientInfo, binary.AppendUvarint(nil, 100)) // warm the connection
	require.NoError(t, err)
	base := runtime.NumGoroutine()
	wait := clientPayloads()[route.MethodClientWait]
	wait = append(binary.AppendUvarint(nil, 1500), wait[len(binary.AppendUvarint(nil, 200)):]...) // a 1.5 s poll
	const n = 200
	var mu sync.Mutex
	busy, timedOut := 0, 0
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := o.call(addr, route.MethodClientWait, wait)
			require.NoError(t, err)
			d, err := route.ClientResult(resp)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrBusy):
				busy++
			case err == nil:
				require.Equal(t, byte(0), d.Byte(), "nothing reached offset 2^40")
				timedOut++
			default:
				t.Errorf("wait: %v", err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d long polls: %d admitted (ended after their 1.5 s bound), %d refused busy, in %v", n, timedOut, busy, time.Since(start).Round(time.Millisecond))
	require.Equal(t, n, busy+timedOut)
	require.LessOrEqual(t, timedOut, n/2, "most refused")
	require.GreaterOrEqual(t, timedOut, 8)
	wait2 := time.Now()
	waitGoroutines(t, base)
	t.Logf("goroutines back to baseline %d within %v", base, time.Since(wait2).Round(time.Millisecond))

	// Reads are capped whatever the client asks: 20,000 records asked,
	// at most 10,000 served in one answer.
	l := c.node(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 11000; i += 1000 {
		recs := make([]NewRecord, 1000)
		for j := range recs {
			recs[j].Value = []byte{1}
		}
		_, err := l.Append(ctx, "k", recs, ToPartition(0))
		require.NoError(t, err)
	}
	read := binary.AppendUvarint(binary.AppendUvarint(nil, 1000), 0)
	read = binary.AppendUvarint(binary.AppendUvarint(read, 0), 0)
	read = binary.AppendUvarint(binary.AppendUvarint(read, 20000), 1<<40)
	read = wire.AppendString(append(read, 0), "")
	resp, err := o.call(addr, route.MethodClientRead, read)
	require.NoError(t, err)
	d, err := route.ClientResult(resp)
	require.NoError(t, err)
	require.Len(t, route.DecodeRecords(d, 0), maxClientReadRecords)
}

// typedError reports whether err is one a caller can act on: retryable,
// or matching a sentinel or type of the log.
func typedError(err error) bool {
	if retry, _ := route.Retryable(err); retry {
		return true
	}
	var kse *KeySeqError
	var sge *StaleGenerationError
	if errors.As(err, &kse) || errors.As(err, &sge) {
		return true
	}
	for _, s := range []error{ErrCorrupt, ErrUnknownPartition, ErrConfig, ErrRecordTooLarge, ErrEmptyKey, ErrEmptyBatch,
		ErrBatchTooLarge, ErrDuplicateID, ErrIDConflict, ErrKeyDeleted, ErrUnknownMember} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	wait.Until(t, 10*time.Second, "goroutines back to baseline", func() bool {
		return runtime.NumGoroutine() <= base+5
	})
}

// A thin client with a worker certificate that is not a member is served;
// one with a certificate of another CA, or none, is not; and without TLS
// only loopback clients are.
func TestRemoteTLSIdentity(t *testing.T) {
	c, pki := newTLSCluster(t, 3, nil)
	addrs := c.addrs(0, 1, 2)
	cert, key := pki.issue(nodecert.Worker, "app1")
	r := dialRemote(t, RemoteConfig{Addrs: addrs, ID: "app1",
		TLS: &TLSConfig{Cluster: testClusterName, CertFile: cert, KeyFile: key, CAFile: pki.caFile()}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := r.Append(ctx, "tls-1", []NewRecord{{Value: []byte("x")}})
	require.NoError(t, err)
	recs, err := r.Read(ctx, res.Partition, res.FirstOffset, ReadOptions{})
	require.NoError(t, err)
	require.Equal(t, "tls-1", recs[0].Key)
	require.NotContains(t, servers(t, c.node(c.leader(0))), "app1", "the client is no member")
	_, err = r.JoinGroup(ctx, "g", "app1", time.Second)
	require.NoError(t, err, "a worker consumes")
	_, err = r.ResetGroup(ctx, "g", StartPosition{Kind: StartEarliest})
	require.ErrorIs(t, err, ErrUnauthorized, "resetting a group is an operator's action")
	require.ErrorIs(t, r.DeleteGroup(ctx, "g"), ErrUnauthorized)
	require.ErrorIs(t, r.SkipParked(ctx, "g", 0, 0), ErrUnauthorized, "skipping loses an event: an operator's action")

	other := newTestPKI(t)
	ocert, okey := other.issue(nodecert.Worker, "app2")
	short, cancelShort := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShort()
	_, err = Dial(short, RemoteConfig{Addrs: addrs, ID: "app2",
		TLS: &TLSConfig{Cluster: testClusterName, CertFile: ocert, KeyFile: okey, CAFile: other.caFile()}})
	require.Error(t, err, "a certificate of another CA is refused")

	short2, cancelShort2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShort2()
	_, err = Dial(short2, RemoteConfig{Addrs: addrs})
	require.Error(t, err, "a plaintext client is refused")
}

func TestAuthorizeClientCalls(t *testing.T) {
	far := mux.Peer{Addr: farConn{}.RemoteAddr()}
	loop := mux.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
	for code := route.MethodClientInfo; code <= route.LastClientMethod; code++ {
		require.ErrorIs(t, authorizePlain(far, route.Call{Method: code}), ErrUnauthorized, "method %d from afar without TLS", code)
		require.NoError(t, authorizePlain(loop, route.Call{Method: code}))
		worker := nodecert.Identity{Cluster: testClusterName, Role: nodecert.Worker, NodeID: "app"}
		require.NoError(t, authorizeIdentity(worker, route.Call{Method: code}, map[string]member{"n1": {voter: true}}), "a worker that is no member")
	}
	// The leader-run methods stay closed to it.
	worker := nodecert.Identity{Cluster: testClusterName, Role: nodecert.Worker, NodeID: "app"}
	require.ErrorIs(t, authorizeIdentity(worker, route.Call{Method: route.MethodAppend}, map[string]member{"n1": {voter: true}}), ErrUnauthorized)
}

// FuzzClientCalls hands arbitrary payloads to every client call of a
// single node, as a thin client would send them: nothing may panic, and
// every answer is a well-formed reply (an error reply for what does not
// decode). Waits are bounded by the payload's own deadline, capped short.
func FuzzClientCalls(f *testing.F) {
	l := openSingle(f, f.TempDir(), func(c *Config) { c.Partitions = 2 })
	f.Cleanup(func() { l.Close() })
	n := route.LastClientMethod - route.MethodClientInfo + 1
	for code := route.MethodClientInfo; code <= route.LastClientMethod; code++ {
		f.Add(code, []byte{5})
		f.Add(code, []byte{5, 0, 0, 0, 0})
		f.Add(code, []byte{5, 1, 'k', 1, 1, 'v'})
	}
	for code, payload := range clientPayloads() {
		f.Add(code, payload)
	}
	req := wire.Request{Key: "k", Records: []NewRecord{{ID: uuid.New(), Value: []byte("v")}}}
	f.Add(route.MethodClientAppends, route.AppendAppends([]byte{5}, [][]byte{wire.EncodeRequest(nil, &req), {1}}))
	f.Fuzz(func(t *testing.T, code byte, payload []byte) {
		code = route.MethodClientInfo + code%n
		if len(payload) > 0 {
			payload[0] = 1 + payload[0]%20 // the call's own deadline: at most 20 ms
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		reply := l.serveClient(ctx, code, payload)
		require.NotEmpty(t, reply, "every call answers")
	})
}

// Concurrent appends of one Remote travel together, several in a call,
// and each keeps its own outcome: the appends whose expectation holds are
// applied, the others fail with their own *KeySeqError and apply nothing;
// appending the same records again (same IDs) is answered as a duplicate
// with the original offsets. Through a follower too, whose appends go to
// the leader one by one.
func TestRemoteConcurrentAppendsKeepTheirOutcomes(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.leader(0)
	for _, node := range []int{lead, (lead + 1) % 3} {
		r := dialRemote(t, RemoteConfig{Addrs: c.addrs(node)})
		const n = 64
		recs := make([][]NewRecord, n)
		results, errs := make([]AppendResult, n), make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			recs[i] = []NewRecord{{ID: uuid.New(), Value: []byte{byte(i)}}}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Odd appends expect a key that does not exist yet to be at
				// 5: refused.
				opt := ExpectKeyAbsent()
				if i%2 == 1 {
					opt = ExpectKeySeq(5)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				results[i], errs[i] = r.Append(ctx, fmt.Sprintf("n%d-k%d", node, i), recs[i], opt)
			}()
		}
		wg.Wait()
		for i := range n {
			if i%2 == 1 {
				var kse *KeySeqError
				require.ErrorAs(t, errs[i], &kse, "append %d", i)
				require.Equal(t, fmt.Sprintf("n%d-k%d", node, i), kse.Key)
				continue
			}
			require.NoError(t, errs[i], "append %d", i)
			got, err := r.Read(context.Background(), results[i].Partition, results[i].FirstOffset, ReadOptions{MaxRecords: 1})
			require.NoError(t, err)
			require.Equal(t, recs[i][0].ID, got[0].ID, "append %d has its own offset", i)
			require.Equal(t, fmt.Sprintf("n%d-k%d", node, i), got[0].Key)
		}
		require.Positive(t, r.appender.grouped.Load(), "appends travelled together")
		// The same records again: duplicates, with the original offsets.
		for i := 0; i < n; i += 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.Append(context.Background(), fmt.Sprintf("n%d-k%d", node, i), recs[i])
				assert.NoError(t, err)
				assert.True(t, res.Duplicate, "append %d again", i)
				assert.Equal(t, results[i].FirstOffset, res.FirstOffset)
			}()
		}
		wg.Wait()
		for i := 1; i < n; i += 2 {
			info, err := r.KeyInfo(context.Background(), r.Partition(fmt.Sprintf("n%d-k%d", node, i)), fmt.Sprintf("n%d-k%d", node, i))
			require.NoError(t, err)
			require.Zero(t, info.Seq, "a refused append applied nothing")
		}
	}
}

// The appends of one client call that reach their shard's leader go into
// one raft entry together (Batcher.SubmitAll), each with its own outcome:
// a failed expectation refuses only its own request.
func TestClientAppendsShareAnEntry(t *testing.T) {
	c := newCluster(t, 1, nil)
	l := c.node(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := l.Append(ctx, "warm", []NewRecord{{Value: []byte("x")}})
	require.NoError(t, err)
	var encs [][]byte
	for i := range 10 {
		req := buildRequest(fmt.Sprintf("k%d", i), []NewRecord{{ID: uuid.New(), Value: []byte("v")}}, 0, []AppendOption{ExpectKeyAbsent()}, l.Partition)
		if i == 3 {
			req = buildRequest("warm", []NewRecord{{ID: uuid.New(), Value: []byte("v")}}, 0, []AppendOption{ExpectKeyAbsent()}, l.Partition)
		}
		encs = append(encs, wire.EncodeRequest(nil, &req))
	}
	before := l.Stats().Shards[0].EntrySizes
	results, errs := l.router.ClientAppends(ctx, encs)
	after := l.Stats().Shards[0].EntrySizes
	require.Equal(t, before.Count+1, after.Count, "one entry")
	require.Equal(t, before.Sum+10, after.Sum, "of the 10 appends")
	for i := range encs {
		if i == 3 {
			var kse *KeySeqError
			require.ErrorAs(t, errs[i], &kse)
			continue
		}
		require.NoError(t, errs[i])
		require.Equal(t, uint64(1), results[i].FirstKeySeq)
	}
}

// A read that finds nothing below a head the client was shown waits
// until the node in use holds the records up to it and reads once more,
// so that a subscription that moves on to that head skips nothing on a
// lagging node; where the records are hidden (a deleted key) the second
// read finds nothing either and the read returns, instead of waiting for
// ever.
func TestRemoteReadBelowKnownHead(t *testing.T) {
	c := newCluster(t, 1, func(c *Config) { c.Partitions = 1 })
	r := dialRemote(t, RemoteConfig{Addrs: c.addrs(0)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.node(0).Append(ctx, "gone", []NewRecord{{Value: []byte("a")}, {Value: []byte("b")}})
	require.NoError(t, err)
	_, err = c.node(0).DeleteKey(ctx, "gone")
	require.NoError(t, err)
	head, err := r.NextOffset(0)
	require.NoError(t, err)
	require.Positive(t, head)
	recs, err := r.Read(ctx, 0, 0, ReadOptions{})
	require.NoError(t, err)
	require.Empty(t, recs, "hidden records: nothing, and no wait for ever")

	// A head beyond what the node holds (as a node ahead of it answered):
	// the read waits for the record, then returns it.
	raise(&r.heads[0], head+1)
	got := make(chan []Record, 1)
	go func() {
		recs, err := r.Read(ctx, 0, head, ReadOptions{})
		assert.NoError(t, err)
		got <- recs
	}()
	select {
	case recs := <-got:
		t.Fatalf("the read did not wait: %v", recs)
	case <-time.After(200 * time.Millisecond):
	}
	res, err := c.node(0).Append(ctx, "late", []NewRecord{{Value: []byte("c")}})
	require.NoError(t, err)
	recs = <-got
	require.Len(t, recs, 1)
	require.Equal(t, res.FirstOffset, recs[0].Offset)
}
