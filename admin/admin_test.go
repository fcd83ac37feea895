package admin_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/dedup"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/outbox"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/schema"
	"github.com/esraft/esraft/systemtest/wait"
)

const token = "s3cret"

type node struct {
	store *eventstore.Store
	proj  *projection.Local
	srv   *httptest.Server
}

// newNode starts a single-node store with one local projection and the
// admin handler in front of it; configure changes the handler's Config.
func newNode(t *testing.T, configure ...func(*admin.Config)) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := eventstore.Open(ctx, t.TempDir(), eventstore.Partitions(4))
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	db, err := sqlite.Open(ctx, t.TempDir(), `CREATE TABLE seen (id TEXT PRIMARY KEY)`)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	proj := projection.NewLocal(store, db, "seen", func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		_, err := projection.Exec(ctx, tx, `INSERT INTO seen (id) VALUES (?)`, ev.ID.String())
		return err
	}, projection.Options{})
	done := make(chan struct{})
	go func() { defer close(done); proj.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cfg := admin.Config{Store: store, Projections: map[string]*projection.Local{"seen": proj}, Token: token, Context: ctx}
	for _, c := range configure {
		c(&cfg)
	}
	h, err := admin.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &node{store: store, proj: proj, srv: srv}
}

// call makes an authenticated request and decodes a JSON answer into out.
func (n *node) call(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if raw, ok := body.(rawBody); ok {
		rd = strings.NewReader(string(raw))
	} else if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, n.srv.URL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(data, out), string(data))
	}
	return resp.StatusCode
}

// rawBody is a request body call sends as it is, not as JSON.
type rawBody string

func (n *node) appendEvents(t *testing.T, stream string, k int) {
	t.Helper()
	evs := make([]eventstore.EventData, k)
	for i := range evs {
		evs[i] = eventstore.EventData{Type: "Happened", Data: []byte(`{"n":1}`)}
	}
	_, err := n.store.Append(context.Background(), stream, eventstore.Any, evs)
	require.NoError(t, err)
}

func TestAdminRefusesWithoutCredentials(t *testing.T) {
	n := newNode(t)
	for _, c := range []struct{ path, auth string }{
		{"/admin/status", ""}, {"/admin/status", "Bearer wrong"}, {"/admin/streams", "Basic " + token}, {"/metrics", ""},
	} {
		req, _ := http.NewRequest("GET", n.srv.URL+c.path, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var e admin.Error
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, c)
		require.Equal(t, "unauthorized", e.Code)
		require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
	}
	// Health is open to probes.
	resp, err := http.Get(n.srv.URL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	_, err = admin.New(admin.Config{Store: n.store})
	require.ErrorContains(t, err, "never open")
}

func TestAdminStatusStreamsAndReads(t *testing.T) {
	n := newNode(t)
	for i := range 30 {
		n.appendEvents(t, fmt.Sprintf("order-%d", i), 2)
	}
	n.appendEvents(t, "customer-1", 1)

	var st admin.Status
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/status", nil, &st))
	require.Len(t, st.Nodes, 1)
	require.Equal(t, "voter", st.Nodes[0].Role)
	require.True(t, st.Nodes[0].Reachable)
	require.Len(t, st.Shards, 1)
	require.Equal(t, st.Node, st.Shards[0].Leader)
	require.Len(t, st.Partitions, 4)

	// Pages of 7 through the 30 order streams, in listing order.
	var names []string
	after := ""
	for {
		var page admin.StreamList
		require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams?limit=7&category=order&after="+url.QueryEscape(after), nil, &page))
		for _, s := range page.Streams {
			names = append(names, s.Stream)
			require.Equal(t, uint64(2), s.Version)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	require.Len(t, names, 30)
	require.Equal(t, "order-0", names[0])
	require.Equal(t, "order-29", names[29])

	var info admin.StreamInfo
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/order-3", nil, &info))
	require.Equal(t, uint64(2), info.Version)
	var e admin.Error
	require.Equal(t, http.StatusNotFound, n.call(t, "GET", "/admin/streams/nope", nil, &e))
	require.Equal(t, "not_found", e.Code)

	var page admin.EventPage
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/order-3/events?direction=backward", nil, &page))
	require.Len(t, page.Events, 2)
	require.Equal(t, uint64(2), page.Events[0].Version)
	require.JSONEq(t, `{"n":1}`, string(page.Events[0].Data))
	require.Equal(t, http.StatusBadRequest, n.call(t, "GET", "/admin/streams/order-3/events?limit=0", nil, &e))
	require.Equal(t, http.StatusBadRequest, n.call(t, "GET", "/admin/streams/order-3/events?from=-1", nil, &e))

	require.Equal(t, http.StatusOK, n.call(t, "POST", "/admin/streams/order-3/truncate", map[string]any{"before": 2}, nil))
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/streams/order-3", nil, &info))
	require.Equal(t, uint64(2), info.FirstVersion)
	require.Equal(t, http.StatusConflict, n.call(t, "DELETE", "/admin/streams/order-4?expected_version=1", nil, &e))
	require.Equal(t, "wrong_version", e.Code)
	require.Equal(t, http.StatusOK, n.call(t, "DELETE", "/admin/streams/order-4?expected_version=2", nil, nil))
	require.Equal(t, http.StatusGone, n.call(t, "GET", "/admin/streams/order-4/events", nil, &e))
	require.Equal(t, http.StatusBadRequest, n.call(t, "POST", "/admin/streams/order-5/truncate", map[string]any{"before": 2, "extra": 1}, &e))

	var parts admin.PartitionList
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/partitions", nil, &parts))
	total := uint64(0)
	for _, p := range parts.Partitions {
		total += p.NextOffset
	}
	require.GreaterOrEqual(t, total, uint64(61))
	require.Equal(t, http.StatusNotFound, n.call(t, "GET", "/admin/partitions/9/events", nil, &e))

	var ready admin.Health
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/readyz", nil, &ready))
	require.Equal(t, "ok", ready.Status)
}

func TestAdminTailIsWokenByAppends(t *testing.T) {
	n := newNode(t)
	p := n.store.PartitionOf("tail-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/admin/partitions/%d/tail", n.srv.URL, p), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	// The tail starts at the head: these appends come after it opened.
	go func() {
		for range 3 {
			n.appendEvents(t, "tail-1", 1)
		}
	}()
	sc := bufio.NewScanner(resp.Body)
	var got []admin.Event
	for len(got) < 3 && sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var ev admin.Event
			require.NoError(t, json.Unmarshal([]byte(data), &ev))
			got = append(got, ev)
		}
	}
	require.Len(t, got, 3)
	for i, ev := range got {
		require.Equal(t, "tail-1", ev.Stream)
		require.Equal(t, uint64(i+1), ev.Version)
	}
}

// tailEvents opens an SSE tail at path and returns a function reading
// its next n events.
func (n *node) tailEvents(t *testing.T, ctx context.Context, path string) func(n int) []admin.Event {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	sc := bufio.NewScanner(resp.Body)
	return func(k int) []admin.Event {
		var got []admin.Event
		for len(got) < k && sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var ev admin.Event
				require.NoError(t, json.Unmarshal([]byte(data), &ev))
				got = append(got, ev)
			}
		}
		require.Equal(t, k, len(got), "events from tail %s; it ended: %v", path, sc.Err())
		return got
	}
}

// A stream's tail sends the stream's events from a version (its history
// first, more than a page of it), then its new events as they are
// appended, in version order, none twice or missed, and no other
// stream's; without a version it sends new events only.
func TestAdminStreamTail(t *testing.T) {
	n := newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A stream in acct-1's partition, further along than acct-1: its
	// events are in the partition the tail follows, at versions acct-1
	// has yet to reach.
	other := ""
	for i := 0; other == ""; i++ {
		if s := fmt.Sprintf("other-%d", i); n.store.PartitionOf(s) == n.store.PartitionOf("acct-1") {
			other = s
		}
	}
	for range 12 {
		n.appendEvents(t, "acct-1", 100)
		n.appendEvents(t, other, 110)
		n.appendEvents(t, "acct-2", 3)
	}
	versions := func(evs []admin.Event) []uint64 {
		var out []uint64
		for _, e := range evs {
			require.Equal(t, "acct-1", e.Stream)
			out = append(out, e.Version)
		}
		return out
	}
	span := func(from, to uint64) []uint64 {
		var out []uint64
		for v := from; v <= to; v++ {
			out = append(out, v)
		}
		return out
	}
	next := n.tailEvents(t, ctx, "/admin/streams/acct-1/tail?from=3")
	require.Equal(t, span(3, 1200), versions(next(1198)), "history from version 3, over a page")
	done := make(chan struct{})
	go func() { // appends while the tail runs, to acct-1 and to others
		defer close(done)
		for range 5 {
			for _, s := range []string{"acct-1", other, "acct-2"} {
				if _, err := n.store.Append(ctx, s, eventstore.Any, []eventstore.EventData{{Type: "Happened"}}); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		}
	}()
	require.Equal(t, span(1201, 1205), versions(next(5)), "then the new events")
	<-done

	newOnly := n.tailEvents(t, ctx, "/admin/streams/acct-1/tail")
	n.appendEvents(t, other, 1)
	n.appendEvents(t, "acct-1", 2)
	require.Equal(t, span(1206, 1207), versions(newOnly(2)), "without from: new events only")

	var e admin.Error
	require.Equal(t, http.StatusBadRequest, n.call(t, "GET", "/admin/streams/acct-1/tail?from=0", nil, &e))
}

// A rebuild reports its progress while it runs (below 100 % at first,
// never going down) and, once it ended, its own final figure: every event
// up to the heads replayed.
func TestAdminProjectionRebuildReaches100(t *testing.T) {
	n := newNode(t)
	for i := range 50 {
		n.appendEvents(t, fmt.Sprintf("order-%d", i), 10)
	}
	wait.Until(t, 20*time.Second, "the projection caught up", func() bool { return n.proj.Status().Lag == 0 })
	total := uint64(0)
	for part := range n.store.Partitions() {
		h, err := n.store.Head(eventstore.Partition(part))
		require.NoError(t, err)
		total += h
	}
	var p admin.Projection
	require.Equal(t, http.StatusAccepted, n.call(t, "POST", "/admin/projections/seen/rebuild", nil, &p))
	require.NotNil(t, p.Rebuild)
	require.Equal(t, total, p.Rebuild.Total)
	require.Less(t, p.Rebuild.Percent, 100.0, "the answer to the start shows the replay under way")
	started, percents := p.Rebuild.Started, []float64{p.Rebuild.Percent}
	var last *admin.RebuildResult
	wait.Until(t, 20*time.Second, "the rebuild ended", func() bool {
		var list admin.ProjectionList
		n.call(t, "GET", "/admin/projections", nil, &list)
		if rb := list.Projections[0].Rebuild; rb != nil {
			percents = append(percents, rb.Percent)
			require.Equal(t, float64(rb.Replayed)*100/float64(rb.Total), rb.Percent)
			return false
		}
		last = list.Projections[0].LastRebuild
		return true
	})
	for i := 1; i < len(percents); i++ {
		require.GreaterOrEqual(t, percents[i], percents[i-1], "progress went down: %v", percents)
	}
	require.NotNil(t, last, "the server reports how the rebuild ended")
	require.True(t, last.Started.Equal(started))
	require.Empty(t, last.Error)
	require.Equal(t, total, last.Total)
	require.Equal(t, total, last.Replayed)
	require.Equal(t, 100.0, last.Percent)
	require.False(t, last.Ended.Before(last.Started))
	var e admin.Error
	require.Equal(t, http.StatusNotFound, n.call(t, "POST", "/admin/projections/nope/rebuild", nil, &e))
	require.Equal(t, http.StatusNotFound, n.call(t, "POST", "/admin/projections/seen/parked/0/5/retry", nil, &e))
}

// scrape reads /metrics and parses it with expfmt.
func scrape(t *testing.T, n *node) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", n.srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// value is the value of the metric of family name whose labels include
// want (a counter, gauge, or a histogram's sample count).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	require.True(t, ok, "metric %s missing", name)
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s%v missing", name, want)
	return 0
}

// refusingPublisher publishes every message but those of key "refused",
// which it refuses for good (the relay parks them).
type refusingPublisher struct{}

func (refusingPublisher) Publish(_ context.Context, m outbox.Message) error {
	if m.Key == "refused" {
		return outbox.Permanent(errors.New("the receiver refuses it"))
	}
	return nil
}

// Every metric the Collector names exists after a scrape, and those that
// move deterministically on a single node move by exactly what was done:
// appends and their records and bytes, raft indexes, log store writes and
// applies (one per sequential append), a snapshot per forced snapshot,
// parked records, projection positions, outbox and dedup rows.
func TestMetricsMoveExactly(t *testing.T) {
	ctx := context.Background()
	side, err := sqlite.Open(ctx, t.TempDir(), outbox.Schema, dedup.Schema)
	require.NoError(t, err)
	t.Cleanup(func() { side.Close() })
	n := newNode(t, func(c *admin.Config) {
		c.Outboxes = map[string]*sql.DB{"mail": side.WriteDB()}
		c.Dedups = map[string]*sql.DB{"mail": side.WriteDB()}
	})
	l := n.store.Log()
	n.appendEvents(t, "warm-1", 1)
	before := scrape(t, n)
	const appends, perAppend = 17, 3
	for i := range appends {
		n.appendEvents(t, fmt.Sprintf("m-%d", i), perAppend)
	}
	p := fmt.Sprint(n.store.PartitionOf("m-0"))
	headBefore := value(t, before, "esraft_raftlog_partition_next_offset", "partition", p)
	after := scrape(t, n)
	delta := func(name string, labels ...string) float64 {
		return value(t, after, name, labels...) - value(t, before, name, labels...)
	}
	require.Equal(t, float64(appends), delta("esraft_raftlog_appends_total"))
	require.Equal(t, float64(appends*perAppend), delta("esraft_raftlog_append_records_total"))
	require.Equal(t, float64(0), delta("esraft_raftlog_append_errors_total"))
	require.Equal(t, float64(appends), delta("esraft_raftlog_append_duration_seconds"))
	require.Equal(t, float64(appends), delta("esraft_raftlog_entry_appends", "shard", "0"))
	require.Greater(t, value(t, after, "esraft_raftlog_partition_next_offset", "partition", p), headBefore)
	require.Equal(t, float64(1), value(t, after, "esraft_raftlog_leader", "shard", "0"))
	require.Equal(t, float64(1), value(t, after, "esraft_raftlog_has_leader", "shard", "0"))
	require.Equal(t, model.MetricType("histogram"), model.MetricType(strings.ToLower(after["esraft_raftlog_append_duration_seconds"].GetType().String())))

	// The bytes as the counter defines them: each record's value and
	// header keys and values, read back from the log.
	bytes := 0
	for i := range appends {
		key := fmt.Sprintf("m-%d", i)
		recs, err := l.ReadKey(ctx, l.Partition(key), key, 1, raftlog.ReadOptions{})
		require.NoError(t, err)
		require.Len(t, recs, perAppend)
		for _, r := range recs {
			bytes += len(r.Value)
			for _, h := range r.Headers {
				bytes += len(h.Key) + len(h.Value)
			}
		}
	}
	require.Equal(t, float64(bytes), delta("esraft_raftlog_append_bytes_total"))

	// One raft entry per sequential append: committed, written to the log
	// store and applied once each; no election on a single node.
	require.Equal(t, float64(appends), delta("esraft_raftlog_commit_index", "shard", "0"))
	require.Equal(t, float64(appends), delta("esraft_raftlog_applied_index", "shard", "0"))
	require.Equal(t, float64(appends), delta("esraft_raftlog_last_index", "shard", "0"))
	require.Equal(t, float64(appends), delta("esraft_raftlog_log_store_write_duration_seconds", "shard", "0"))
	require.Equal(t, float64(appends), delta("esraft_raftlog_fsm_apply_duration_seconds", "shard", "0"))
	require.Equal(t, float64(0), delta("esraft_raftlog_term", "shard", "0"))
	require.Equal(t, float64(l.Status().Shards[0].Term), value(t, after, "esraft_raftlog_term", "shard", "0"))
	require.Equal(t, float64(0), delta("esraft_raftlog_leader_changes_total", "shard", "0"))
	require.GreaterOrEqual(t, value(t, after, "esraft_raftlog_leader_changes_total", "shard", "0"), float64(1), "the election at open")
	require.Equal(t, model.MetricType("histogram"), model.MetricType(strings.ToLower(after["esraft_raftlog_fsm_flush_duration_seconds"].GetType().String())))

	// A forced snapshot (Scavenge takes one per shard) is one more taken,
	// and flushes the state first. A single node installs none.
	_, err = l.Scavenge(ctx)
	require.NoError(t, err)
	snapped := scrape(t, n)
	require.Equal(t, value(t, after, "esraft_raftlog_snapshots_taken_total", "shard", "0")+1, value(t, snapped, "esraft_raftlog_snapshots_taken_total", "shard", "0"))
	require.Greater(t, value(t, snapped, "esraft_raftlog_fsm_flush_duration_seconds", "shard", "0"), value(t, after, "esraft_raftlog_fsm_flush_duration_seconds", "shard", "0"))
	require.Equal(t, float64(0), value(t, snapped, "esraft_raftlog_snapshots_installed_total", "shard", "0"))

	// A consumer group's lag per partition, and a projection's lag.
	gs, err := n.store.JoinGroup(ctx, "g", "m1", 10*time.Second)
	require.NoError(t, err)
	var commits []eventstore.OffsetCommit
	for _, a := range gs.Partitions {
		commits = append(commits, eventstore.OffsetCommit{Partition: a.Partition, Generation: a.Generation, Offset: 0})
	}
	_, err = n.store.CommitOffsets(ctx, "g", "m1", commits)
	require.NoError(t, err)
	head, err := n.store.Head(n.store.PartitionOf("m-0"))
	require.NoError(t, err)
	fams := scrape(t, n)
	require.Equal(t, float64(head), value(t, fams, "esraft_consumer_group_lag", "group", "g", "partition", p))
	require.Equal(t, float64(0), value(t, fams, "esraft_consumer_group_committed_offset", "group", "g", "partition", p))
	require.Equal(t, float64(1), value(t, fams, "esraft_consumer_group_members", "group", "g"))
	require.Equal(t, float64(gs.Generation), value(t, fams, "esraft_consumer_group_generation", "group", "g"))
	wait.Until(t, 20*time.Second, "projection lag 0 in the metrics", func() bool { return value(t, scrape(t, n), "esraft_projection_lag", "projection", "seen") == 0 })

	// The projection's position in every partition is the partition's head.
	fams = scrape(t, n)
	for part := range n.store.Partitions() {
		h, err := n.store.Head(eventstore.Partition(part))
		require.NoError(t, err)
		require.Equal(t, float64(h), value(t, fams, "esraft_projection_position", "projection", "seen", "partition", fmt.Sprint(part)))
	}
	require.Equal(t, float64(0), value(t, fams, "esraft_projection_parked", "projection", "seen"))

	// Park one record of the group: +1; an operator's retry and the
	// member's handling of it: -1.
	var grant eventstore.OffsetCommit
	for _, a := range gs.Partitions {
		if fmt.Sprint(a.Partition) == p {
			grant = eventstore.OffsetCommit{Partition: a.Partition, Generation: a.Generation}
		}
	}
	recs, err := l.Read(ctx, grant.Partition, 0, raftlog.ReadOptions{MaxRecords: 1})
	require.NoError(t, err)
	parkedBefore := value(t, fams, "esraft_consumer_group_parked", "group", "g")
	park := grant
	park.Offset, park.Park = 1, []eventstore.ParkedRecord{{Offset: 0, Key: recs[0].Key, Error: "poison", Attempts: 1}}
	_, err = n.store.CommitOffsets(ctx, "g", "m1", []eventstore.OffsetCommit{park})
	require.NoError(t, err)
	require.Equal(t, parkedBefore+1, value(t, scrape(t, n), "esraft_consumer_group_parked", "group", "g"))
	var res admin.Retry
	require.Equal(t, http.StatusOK, n.call(t, "POST", fmt.Sprintf("/admin/groups/g/parked/%s/0/retry", p), nil, &res))
	unpark := grant
	unpark.Offset, unpark.Unpark = 1, []uint64{0}
	_, err = n.store.CommitOffsets(ctx, "g", "m1", []eventstore.OffsetCommit{unpark})
	require.NoError(t, err)
	require.Equal(t, parkedBefore, value(t, scrape(t, n), "esraft_consumer_group_parked", "group", "g"))

	// The outbox and the dedup table: two messages enqueued and three
	// marks; a relay round publishes one and parks the other; a retry
	// makes it pending again.
	src := uuid.New()
	require.NoError(t, side.Update(ctx, func(tx *sql.Tx) error {
		if _, err := outbox.Enqueue(ctx, tx, "h", src, outbox.Message{Key: "ok", Type: "A"}, outbox.Message{Key: "refused", Type: "B"}); err != nil {
			return err
		}
		for i := range 3 {
			if _, err := dedup.Mark(ctx, tx, "mailer", fmt.Sprint(i), time.Now()); err != nil {
				return err
			}
		}
		return nil
	}))
	fams = scrape(t, n)
	require.Equal(t, float64(2), value(t, fams, "esraft_outbox_pending", "outbox", "mail"))
	require.Equal(t, float64(0), value(t, fams, "esraft_outbox_parked", "outbox", "mail"))
	require.Equal(t, float64(3), value(t, fams, "esraft_dedup_rows", "dedup", "mail"))
	relay, err := outbox.NewRelay(side.WriteDB(), outbox.Config{Publisher: refusingPublisher{}, MaxAttempts: 1})
	require.NoError(t, err)
	round, err := relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, round.Published)
	fams = scrape(t, n)
	require.Equal(t, float64(0), value(t, fams, "esraft_outbox_pending", "outbox", "mail"))
	require.Equal(t, float64(1), value(t, fams, "esraft_outbox_parked", "outbox", "mail"))
	require.NoError(t, outbox.Retry(ctx, side.WriteDB(), outbox.MessageID(src, "h", 1)))
	fams = scrape(t, n)
	require.Equal(t, float64(1), value(t, fams, "esraft_outbox_pending", "outbox", "mail"))
	require.Equal(t, float64(0), value(t, fams, "esraft_outbox_parked", "outbox", "mail"))

	// The handler's own registry has the Go runtime's and the process's
	// collectors too (Config.Registry).
	require.Contains(t, fams, "go_goroutines")
	require.Contains(t, fams, "process_cpu_seconds_total")

	var g admin.Group
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/groups/g", nil, &g))
	require.Len(t, g.Members, 1)
	require.Len(t, g.Members[0].Partitions, 4)
	var list admin.GroupList
	require.Equal(t, http.StatusOK, n.call(t, "GET", "/admin/groups", nil, &list))
	require.Equal(t, "g", list.Groups[0].Group)
	require.Equal(t, g.Lag, list.Groups[0].Lag)
}

func decodeJSON(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

// The schema registry's Confluent API is served by the admin handler
// under /admin/schemas, behind its authentication.
func TestAdminServesTheSchemaRegistry(t *testing.T) {
	n := newNode(t, func(cfg *admin.Config) {
		reg, err := schema.Open(context.Background(), cfg.Store)
		require.NoError(t, err)
		cfg.Schemas = reg
	})
	call := func(method, path, body, auth string) (int, map[string]any) {
		req, _ := http.NewRequest(method, n.srv.URL+"/admin/schemas"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", schema.ContentType)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	v1 := `{"schema": "{\"type\": \"object\", \"properties\": {\"qty\": {\"type\": \"integer\"}}}", "schemaType": "JSON"}`
	code, _ := call("POST", "/subjects/OrderPlaced/versions", v1, "")
	require.Equal(t, http.StatusUnauthorized, code, "no token")
	code, out := call("POST", "/subjects/OrderPlaced/versions", v1, "Bearer "+token)
	require.Equal(t, http.StatusOK, code, out)
	require.Contains(t, out, "id")
	code, out = call("GET", "/subjects/OrderPlaced/versions/latest", "", "Bearer "+token)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, "OrderPlaced", out["subject"])
	require.EqualValues(t, 1, out["version"])
}
