package admin

import (
	"context"
	"database/sql"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esraft/esraft/dedup"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/outbox"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/raftlog"
)

// Collector is a prometheus.Collector of a node's log, consumer groups
// and local projections, and optionally of SQLite outboxes and dedup
// tables (WithOutbox, WithDedup). It reads their state when scraped: the
// log's counters and histograms are atomics that its append path, raft's
// log store writes, applies and flushes bump, so nothing is recorded under
// a lock on a hot path. Outboxes and dedup tables live in the service's
// own databases, not in the log, so each scrape runs one COUNT query per
// database named (bounded by scrapeQueryTimeout; one that fails is left
// out of the scrape and logged). Labels are bounded: shards, partitions,
// group, projection, outbox and dedup names, never streams. Register it
// in your own registry, or let the admin handler serve it at /metrics.
type Collector struct {
	store       *eventstore.Store
	projections map[string]*projection.Local
	outboxes    map[string]*sql.DB
	dedups      map[string]*sql.DB
	log         *slog.Logger
}

var _ prometheus.Collector = (*Collector)(nil)

// CollectorOption adds a source to a Collector.
type CollectorOption interface{ apply(*Collector) }

type collectorOption func(*Collector)

func (f collectorOption) apply(c *Collector) { f(c) }

// WithOutbox adds the outbox in db (package outbox's tables) under name:
// esraft_outbox_pending and esraft_outbox_parked{outbox=name}.
func WithOutbox(name string, db *sql.DB) CollectorOption {
	return collectorOption(func(c *Collector) { c.outboxes[name] = db })
}

// WithDedup adds the dedup table in db (package dedup) under name:
// esraft_dedup_rows{dedup=name}.
func WithDedup(name string, db *sql.DB) CollectorOption {
	return collectorOption(func(c *Collector) { c.dedups[name] = db })
}

// scrapeQueryTimeout bounds each COUNT query of a scrape.
const scrapeQueryTimeout = 2 * time.Second

// NewCollector returns the collector of store, the named local
// projections (nil for none) and what opts add.
func NewCollector(store *eventstore.Store, projections map[string]*projection.Local, opts ...CollectorOption) *Collector {
	c := &Collector{store: store, projections: projections, outboxes: map[string]*sql.DB{}, dedups: map[string]*sql.DB{}, log: store.Logger()}
	for _, o := range opts {
		o.apply(c)
	}
	return c
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("esraft_"+name, help, labels, nil)
}

var (
	descAppends       = desc("raftlog_appends_total", "Append requests (appends, deletes, truncations) this node accepted that succeeded.")
	descAppendErrors  = desc("raftlog_append_errors_total", "Append requests this node accepted that failed.")
	descRecords       = desc("raftlog_append_records_total", "Records appended through this node.")
	descBytes         = desc("raftlog_append_bytes_total", "Value and header bytes of the records appended through this node.")
	descLatency       = desc("raftlog_append_duration_seconds", "Time from an append's call on this node to its answer (committed by a quorum and applied, or failed).")
	descEntryAppends  = desc("raftlog_entry_appends", "Append requests per raft entry this node proposed as the shard's leader (group commit batch size).", "shard")
	descLogWrites     = desc("raftlog_log_store_write_duration_seconds", "Time each write to the shard's raft log store took on this node (one or more entries, synced).", "shard")
	descApplyDuration = desc("raftlog_fsm_apply_duration_seconds", "Time each batch of committed raft entries took to apply to this node's state of the shard.", "shard")
	descFlushDuration = desc("raftlog_fsm_flush_duration_seconds", "Time each in-memory table of applied state took to write to the shard's state files on this node.", "shard")
	descSnapsTaken    = desc("raftlog_snapshots_taken_total", "Raft snapshots of the shard this node persisted.", "shard")
	descSnapsInstall  = desc("raftlog_snapshots_installed_total", "Full copies of the shard's state this node installed from a leader.", "shard")
	descLeaderChanges = desc("raftlog_leader_changes_total", "Leader changes this node observed.", "shard")
	descTerm          = desc("raftlog_term", "The shard's raft term on this node.", "shard")
	descCommit        = desc("raftlog_commit_index", "The shard's raft commit index on this node.", "shard")
	descApplied       = desc("raftlog_applied_index", "The last raft index applied to this node's state of the shard.", "shard")
	descLast          = desc("raftlog_last_index", "The last raft index in this node's log of the shard.", "shard")
	descLeader        = desc("raftlog_leader", "1 if this node leads the shard.", "shard")
	descHasLeader     = desc("raftlog_has_leader", "1 if this node knows a leader of the shard.", "shard")
	descNextOffset    = desc("raftlog_partition_next_offset", "The offset the partition's next record takes, on this node.", "partition")

	descGroupLag        = desc("consumer_group_lag", "Records of the partition the consumer group has yet to process, against this node's head.", "group", "partition")
	descGroupCommitted  = desc("consumer_group_committed_offset", "The consumer group's committed offset in the partition.", "group", "partition")
	descGroupParked     = desc("consumer_group_parked", "Records the consumer group parked (dead-lettered).", "group")
	descGroupMembers    = desc("consumer_group_members", "Live members of the consumer group.", "group")
	descGroupGeneration = desc("consumer_group_generation", "The consumer group's generation.", "group")

	descProjLag      = desc("projection_lag", "Events this node's local projection has yet to handle.", "projection")
	descProjParked   = desc("projection_parked", "Events the local projection parked.", "projection")
	descProjPosition = desc("projection_position", "The next offset the local projection handles in the partition: every event below it is handled (or skipped).", "projection", "partition")
	descProjRebuild  = desc("projection_rebuild_replayed_ratio", "Progress of the local projection's running rebuild, 0 to 1 (absent when none runs).", "projection")

	descOutboxPending = desc("outbox_pending", "Messages of the outbox not yet published that the relay still tries.", "outbox")
	descOutboxParked  = desc("outbox_parked", "Messages of the outbox the relay gave up on (parked).", "outbox")
	descDedupRows     = desc("dedup_rows", "Marks in the dedup table (message IDs remembered as handled).", "dedup")
)

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAppends, descAppendErrors, descRecords, descBytes, descLatency, descEntryAppends,
		descLogWrites, descApplyDuration, descFlushDuration, descSnapsTaken, descSnapsInstall, descOutboxPending, descOutboxParked, descDedupRows,
		descLeaderChanges, descTerm, descCommit, descApplied, descLast, descLeader, descHasLeader, descNextOffset,
		descGroupLag, descGroupCommitted, descGroupParked, descGroupMembers, descGroupGeneration,
		descProjLag, descProjParked, descProjPosition, descProjRebuild} {
		ch <- d
	}
}

// Collect reads the state and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	l := c.store.Log()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := l.Stats()
	counter(descAppends, st.Appends)
	counter(descAppendErrors, st.AppendErrors)
	counter(descRecords, st.AppendRecords)
	counter(descBytes, st.AppendBytes)
	ch <- histogram(descLatency, st.AppendLatency, 1e-9)
	for _, s := range st.Shards {
		sh := strconv.Itoa(int(s.Shard))
		ch <- histogram(descEntryAppends, s.EntrySizes, 1, sh)
		counter(descLeaderChanges, s.LeaderChanges, sh)
		ch <- histogram(descLogWrites, s.LogWrites, 1e-9, sh)
		ch <- histogram(descApplyDuration, s.Applies, 1e-9, sh)
		ch <- histogram(descFlushDuration, s.Flushes, 1e-9, sh)
		counter(descSnapsTaken, s.SnapshotsTaken, sh)
		counter(descSnapsInstall, s.SnapshotsInstalled, sh)
	}
	status := l.Status()
	for _, s := range status.Shards {
		sh := strconv.Itoa(int(s.Shard))
		gauge(descTerm, float64(s.Term), sh)
		gauge(descCommit, float64(s.CommitIndex), sh)
		gauge(descApplied, float64(s.AppliedIndex), sh)
		gauge(descLast, float64(s.LastIndex), sh)
		gauge(descLeader, boolValue(s.LeaderID != "" && s.LeaderID == status.NodeID), sh)
		gauge(descHasLeader, boolValue(s.LeaderID != ""), sh)
	}
	for _, p := range status.Partitions {
		gauge(descNextOffset, float64(p.NextOffset), strconv.Itoa(int(p.Partition)))
	}
	c.collectGroups(l, gauge)
	for name, p := range c.projections {
		ps := p.Status()
		gauge(descProjLag, float64(ps.Lag), name)
		gauge(descProjParked, float64(ps.Parked), name)
		for _, pp := range ps.Partitions {
			gauge(descProjPosition, float64(pp.Position), name, strconv.Itoa(int(pp.Partition)))
		}
		if rb := ps.Rebuild; rb != nil {
			ratio := 1.0
			if rb.Total > 0 {
				ratio = min(1, float64(rb.Replayed)/float64(rb.Total))
			}
			gauge(descProjRebuild, ratio, name)
		}
	}
	c.collectSQLite(gauge)
}

// collectSQLite counts the outboxes' and dedup tables' rows, one query
// per database.
func (c *Collector) collectSQLite(gauge func(*prometheus.Desc, float64, ...string)) {
	for name, db := range c.outboxes {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeQueryTimeout)
		n, err := outbox.ReadCounts(ctx, db)
		cancel()
		if err != nil {
			c.log.Warn("admin: metrics: outbox left out of the scrape", "outbox", name, "err", err)
			continue
		}
		gauge(descOutboxPending, float64(n.Pending), name)
		gauge(descOutboxParked, float64(n.Parked), name)
	}
	for name, db := range c.dedups {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeQueryTimeout)
		st, err := dedup.ReadStats(ctx, db)
		cancel()
		if err != nil {
			c.log.Warn("admin: metrics: dedup table left out of the scrape", "dedup", name, "err", err)
			continue
		}
		gauge(descDedupRows, float64(st.Rows), name)
	}
}

func (c *Collector) collectGroups(l *raftlog.Log, gauge func(*prometheus.Desc, float64, ...string)) {
	names, err := l.GroupNames()
	if err != nil {
		return
	}
	for _, n := range names {
		gs, ok, err := l.GroupState(n)
		if err != nil || !ok {
			continue
		}
		lags := l.Lag(gs)
		parked := 0
		for i, a := range gs.Partitions {
			p := strconv.Itoa(int(a.Partition))
			if i < len(lags) {
				gauge(descGroupLag, float64(lags[i]), n, p)
			}
			gauge(descGroupCommitted, float64(a.Committed), n, p)
			parked += len(a.Parked)
		}
		gauge(descGroupParked, float64(parked), n)
		gauge(descGroupMembers, float64(len(gs.Members)), n)
		gauge(descGroupGeneration, float64(gs.Generation), n)
	}
}

// histogram converts a log histogram into a Prometheus one, its bounds
// and sum multiplied by scale (1e-9: nanoseconds to seconds).
func histogram(d *prometheus.Desc, h raftlog.HistogramSnapshot, scale float64, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		buckets[float64(b)*scale] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count, float64(h.Sum)*scale, buckets, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
