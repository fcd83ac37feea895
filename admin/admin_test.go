package admin_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/systemtest/wait"
)

const token = "s3cret"

type node struct {
	store *eventstore.Store
	proj  *projection.Local
	srv   *httptest.Server
}

// newNode starts a single-node store with one local projection and the
// admin handler in front of it.
func newNode(t *testing.T) *node {
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
	h, err := admin.New(admin.Config{Store: store, Projections: map[string]*projection.Local{"seen": proj}, Token: token, Context: ctx})
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

func TestAdminProjectionRebuildReaches100(t *testing.T) {
	n := newNode(t)
	for i := range 50 {
		n.appendEvents(t, fmt.Sprintf("order-%d", i), 1)
	}
	wait.Until(t, 20*time.Second, "the projection caught up", func() bool { return n.proj.Status().Lag == 0 })
	var p admin.Projection
	require.Equal(t, http.StatusAccepted, n.call(t, "POST", "/admin/projections/seen/rebuild", nil, &p))
	wait.Until(t, 20*time.Second, "the rebuild ended", func() bool {
		var list admin.ProjectionList
		n.call(t, "GET", "/admin/projections", nil, &list)
		return list.Projections[0].Rebuild == nil
	})
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

func TestMetricsMoveExactly(t *testing.T) {
	n := newNode(t)
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
	require.Equal(t, value(t, after, "esraft_raftlog_applied_index", "shard", "0")-value(t, before, "esraft_raftlog_applied_index", "shard", "0"), float64(appends))
	require.Equal(t, model.MetricType("histogram"), model.MetricType(strings.ToLower(after["esraft_raftlog_append_duration_seconds"].GetType().String())))

	// A consumer group's lag per partition, and a projection's lag.
	ctx := context.Background()
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
	require.Equal(t, float64(1), value(t, fams, "esraft_consumer_group_members", "group", "g"))
	wait.Until(t, 20*time.Second, "projection lag 0 in the metrics", func() bool { return value(t, scrape(t, n), "esraft_projection_lag", "projection", "seen") == 0 })

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
