// Command faultnode runs one eventstore node for the fault-injection suite
// (package systemtest/faulttest): a voter of a statically bootstrapped
// cluster, plus a small HTTP/JSON API on a second port through which the
// suite appends, reads and inspects the node.
//
// The node listens on 127.0.0.1:0 for both ports and, once it can serve,
// writes their addresses and its process ID to the -ready file (written to
// a temporary name and renamed, so a reader never sees half of it). Other
// nodes reach it at -advertise, the address of the suite's fault-injecting
// proxy; connections it opens to other nodes leave from the -source IP
// (127.0.0.2, 127.0.0.3, ...), which is how the proxy tells the nodes
// apart. It is meant to be killed (SIGKILL), paused (SIGSTOP) and
// restarted on the same -dir.
//
// API (every response is JSON):
//
//	POST /append   {"stream","expect","events":[{"id","type","data"}],"timeout_ms"}
//	               expect >= 0 is an exact version, -1 any, -2 no stream
//	GET  /read     ?p=&from=&limit=   a partition from an offset
//	GET  /stream   ?s=&from=&limit=   a stream from a version
//	GET  /head     ?s=&barrier=       a stream's version and last event ID;
//	                                  barrier=1 reads after a read barrier
//	GET  /digest   ?p=&upto=          SHA-256 of every field of offsets [0, upto)
//	GET  /status                      pid, raft groups, partition heads
//	GET  /group                       the consumer group as this node applied it
//
// With -client, the process is no node at all but a thin client (package
// client) of the nodes at those cluster addresses, running only the
// consumer group member below (-id its member ID, -dir for its record
// file); it writes -ready, with its PID, once the member runs.
//
// With -group-session, the node also runs a member of the consumer group
// wire.ConsumerGroup (projection.Group, member ID the node ID) whose
// handler does nothing but record: every partition granted, every event
// handled and every offset commit attempted is a line of
// wire.ConsumerRecord in the file -consumer-records (by default
// wire.ConsumerRecordFile in -dir),
// written with one O_APPEND write before the member goes on (a handling
// before its offset is committed), so the record survives SIGKILL.
package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/logging"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

func main() {
	var (
		id         = flag.String("id", "", "node ID")
		dir        = flag.String("dir", "", "data directory")
		advertise  = flag.String("advertise", "", "cluster address other nodes dial (the proxy)")
		peers      = flag.String("peers", "", "id=addr,... every voter, this node included")
		source     = flag.String("source", "", "local IP outgoing cluster connections leave from")
		ready      = flag.String("ready", "", "file to write addresses to once serving")
		partitions = flag.Int("partitions", 8, "partitions")
		groups     = flag.Int("groups", 1, "raft groups")
		heartbeat  = flag.Duration("heartbeat", time.Second, "raft heartbeat timeout")
		election   = flag.Duration("election", time.Second, "raft election timeout")
		lease      = flag.Duration("lease", 500*time.Millisecond, "raft leader lease timeout")
		snapThresh = flag.Uint64("snapshot-threshold", 0, "raft snapshot threshold (0: default)")
		snapEvery  = flag.Duration("snapshot-interval", 0, "raft snapshot interval (0: default)")
		trailing   = flag.Uint64("trailing-logs", 0, "raft trailing logs (0: default)")
		scrub      = flag.Duration("scrub-interval", 0, "time between two passes of the state scrub (0: default)")
		logLevel   = flag.String("log-level", "info", "log level (raft's lines included)")
		session    = flag.Duration("group-session", 0, "run a consumer group member with this session timeout (0: none)")
		records    = flag.String("consumer-records", "", "file the consumer member records to (default: "+wire.ConsumerRecordFile+" in -dir)")
		trace      = flag.String("apply-trace", "", "file to append a line per applied entry to (raftlog.Config.ApplyTrace; none if empty)")
		thin       = flag.String("client", "", "addr,... run only a consumer group member, as a thin client of these nodes")
	)
	flag.Parse()
	level, err := logging.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultnode:", err)
		os.Exit(2)
	}
	// raftlog adds the node attribute to its own lines.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: microseconds}))
	log := logger.With("node", *id)
	if *records == "" {
		*records = filepath.Join(*dir, wire.ConsumerRecordFile)
	}
	if *thin != "" {
		if err := runClient(logger, *id, *dir, strings.Split(*thin, ","), *ready, *session); err != nil {
			log.Error("faultnode client failed", "err", err)
			os.Exit(1)
		}
		return
	}
	var traceFile *os.File
	if *trace != "" {
		if traceFile, err = os.OpenFile(*trace, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			log.Error("faultnode failed", "err", err)
			os.Exit(1)
		}
		fmt.Fprintf(traceFile, "start pid %d at %s\n", os.Getpid(), time.Now().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	if err := run(logger, *id, *dir, *advertise, *peers, *source, *ready, *records, *partitions, *groups, *session,
		func(c *raftlog.Config) {
			if traceFile != nil {
				c.ApplyTrace = traceFile
			}
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = *heartbeat, *election, *lease
			c.SnapshotThreshold, c.SnapshotInterval, c.TrailingLogs = *snapThresh, *snapEvery, *trailing
			c.ScrubInterval = *scrub
		}); err != nil {
		log.Error("faultnode failed", "err", err)
		os.Exit(1)
	}
}

// microseconds keeps the record times to the microsecond, for lining a
// node's lines up with the nemesis log.
func microseconds(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 && a.Value.Kind() == slog.KindTime {
		return slog.String(a.Key, a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	return a
}

// applyDigestEvery is the window of the apply digests the nodes log,
// which the suite compares between nodes (raftlog.Config.ApplyDigestEvery).
const applyDigestEvery = 256

func run(logger *slog.Logger, id, dir, advertise, peerList, source, ready, records string, partitions, groups int, session time.Duration, tune func(*raftlog.Config)) error {
	if id == "" || dir == "" || advertise == "" || peerList == "" || ready == "" {
		return errors.New("faultnode: -id, -dir, -advertise, -peers and -ready are required")
	}
	log := logger.With("node", id)
	var peers []eventstore.Peer
	for _, p := range strings.Split(peerList, ",") {
		pid, addr, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("faultnode: bad peer %q", p)
		}
		peers = append(peers, eventstore.Peer{ID: pid, Addr: addr})
	}
	clusterLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// The suite's proxy forwards to the cluster address once it knows it,
	// and Open needs its peers to answer before it forms or rejoins a
	// cluster: announce the address before Open, the ready file after.
	listening, _ := json.Marshal(wire.Ready{PID: os.Getpid(), Cluster: clusterLn.Addr().String()})
	if err := writeAtomic(ready+".listen", listening); err != nil {
		return err
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := eventstore.Open(ctx, dir,
		eventstore.Node(id, advertise), eventstore.Peers(peers...),
		eventstore.Partitions(partitions), eventstore.Logger(logger),
		eventstore.LogConfig(func(c *raftlog.Config) {
			c.Shards = groups
			c.ApplyDigestEvery = applyDigestEvery
			c.Listener = clusterLn
			c.Advertise = advertise
			c.Dialer = func(ctx context.Context, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, "tcp", addr)
			}
			tune(c)
		}))
	if err != nil {
		return err
	}
	defer st.Close()
	stopMember := func() {}
	if session > 0 {
		if stopMember, err = startMember(log, st, id, records, session); err != nil {
			return err
		}
		defer stopMember()
	}
	srv := &http.Server{Handler: newAPI(st), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(httpLn) }()
	info, _ := json.Marshal(wire.Ready{PID: os.Getpid(), Cluster: clusterLn.Addr().String(), HTTP: httpLn.Addr().String()})
	if err := writeAtomic(ready, info); err != nil {
		return err
	}
	log.Info("serving", "ready", string(info))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("closing", "signal", s)
	case err := <-serveErr:
		return err
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	stopMember() // it leaves the group, so the store must still be open
	return st.Close()
}

// runClient runs a consumer group member over a thin client until SIGTERM.
func runClient(logger *slog.Logger, id, dir string, addrs []string, ready string, session time.Duration) error {
	if id == "" || dir == "" || ready == "" || session <= 0 {
		return errors.New("faultnode: -client needs -id, -dir, -ready and -group-session")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := client.Open(ctx, client.Config{Addrs: addrs, ID: id, Logger: logger, CallTimeout: 3 * time.Second})
	if err != nil {
		return err
	}
	defer st.Close()
	stopMember, err := startMember(logger.With("member", id), st, id, filepath.Join(dir, wire.ConsumerRecordFile), session)
	if err != nil {
		return err
	}
	defer stopMember()
	info, _ := json.Marshal(wire.Ready{PID: os.Getpid()})
	if err := writeAtomic(ready, info); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

// recorder appends consumer records to a file, one write per record.
type recorder struct {
	f      *os.File
	member string
	pid    int

	mu  sync.Mutex
	gen map[int]uint64 // partition -> generation of this member's current grant
}

func (r *recorder) write(rec wire.ConsumerRecord) error {
	rec.Member, rec.PID = r.member, r.pid
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = r.f.Write(append(b, '\n'))
	return err
}

// startMember runs this node's member of the consumer group until the
// returned function is called.
func startMember(log *slog.Logger, st *eventstore.Store, id, records string, session time.Duration) (stop func(), err error) {
	f, err := os.OpenFile(records, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	r := &recorder{f: f, member: id, pid: os.Getpid(), gen: map[int]uint64{}}
	opt := projection.GroupOptions{
		SessionTimeout: session,
		// Grants are recorded before the partition's first event is
		// handled, the generation kept for the handler's records. One
		// worker per partition at a time: a grant's worker starts once the
		// previous one stopped.
		OnGrant: func(p eventstore.Partition, gen, from uint64) {
			r.mu.Lock()
			r.gen[int(p)] = gen
			r.mu.Unlock()
			if err := r.write(wire.ConsumerRecord{Kind: wire.RecordGrant, Partition: int(p), Generation: gen, Offset: from, Start: time.Now().UnixNano()}); err != nil {
				log.Error("consumer record", "err", err)
			}
		},
		OnCommit: func(a projection.CommitAttempt) {
			rec := wire.ConsumerRecord{Kind: wire.RecordCommit, Partition: int(a.Partition), Generation: a.Generation, Offset: a.Offset,
				Start: a.Start.UnixNano(), End: a.End.UnixNano(), Outcome: wire.CommitAcked}
			var sge *raftlog.StaleGenerationError
			switch {
			case errors.As(a.Err, &sge):
				rec.Outcome, rec.Error = wire.CommitStale, a.Err.Error()
			case a.Err != nil:
				rec.Outcome, rec.Error = wire.CommitError, a.Err.Error()
			}
			if err := r.write(rec); err != nil {
				log.Error("consumer record", "err", err)
			}
		},
	}
	// The record of a handling is written before the handler returns, so
	// before the batch's offsets are committed; an error (the record not
	// written) makes the runner retry the event.
	h := func(ctx context.Context, _ *sql.Tx, ev eventstore.Event) error {
		r.mu.Lock()
		gen := r.gen[int(ev.Partition)]
		r.mu.Unlock()
		return r.write(wire.ConsumerRecord{Kind: wire.RecordHandle, Partition: int(ev.Partition), Generation: gen, Offset: ev.Offset, ID: ev.ID, Start: time.Now().UnixNano()})
	}
	g := projection.NewGroup(st, wire.ConsumerGroup, id, h, opt)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.Run(ctx); err != nil {
			log.Error("consumer group member", "err", err)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			f.Close()
		})
	}, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type api struct {
	st  *eventstore.Store
	pid int
}

func newAPI(st *eventstore.Store) http.Handler {
	a := &api{st: st, pid: os.Getpid()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /append", a.append)
	mux.HandleFunc("GET /read", a.read)
	mux.HandleFunc("GET /stream", a.stream)
	mux.HandleFunc("GET /head", a.head)
	mux.HandleFunc("GET /digest", a.digest)
	mux.HandleFunc("GET /status", a.status)
	mux.HandleFunc("GET /group", a.group)
	return mux
}

func (a *api) append(w http.ResponseWriter, r *http.Request) {
	var req wire.AppendRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	expected := eventstore.Any
	switch {
	case req.Expect >= 0:
		expected = eventstore.Exact(uint64(req.Expect))
	case req.Expect == wire.ExpectNoStream:
		expected = eventstore.NoStream
	}
	evs := make([]eventstore.EventData, len(req.Events))
	for i, e := range req.Events {
		evs[i] = eventstore.EventData{ID: e.ID, Type: e.Type, Data: e.Data}
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := a.st.Append(ctx, req.Stream, expected, evs)
	var out wire.AppendResponse
	var wv *eventstore.WrongVersionError
	switch {
	case err == nil:
		out = wire.AppendResponse{
			Outcome: wire.OutcomeOK, Partition: int(res.Partition), FirstOffset: res.FirstOffset,
			FirstVersion: res.FirstVersion, LastVersion: res.LastVersion, Duplicate: res.Duplicate,
			Group: int(res.Position.Shard), Index: res.Position.Index,
		}
	case errors.As(err, &wv):
		out = wire.AppendResponse{Outcome: wire.OutcomeWrongVersion, Actual: wv.Actual}
	case errors.Is(err, eventstore.ErrUnknownOutcome):
		out = wire.AppendResponse{Outcome: wire.OutcomeUnknown}
	case errors.Is(err, eventstore.ErrUnavailable):
		out = wire.AppendResponse{Outcome: wire.OutcomeUnavailable}
	case errors.Is(err, eventstore.ErrEventIDConflict):
		out = wire.AppendResponse{Outcome: wire.OutcomeIDConflict}
	case errors.Is(err, eventstore.ErrClosed):
		out = wire.AppendResponse{Outcome: wire.OutcomeClosed}
	default:
		out = wire.AppendResponse{Outcome: wire.OutcomeError}
	}
	if err != nil {
		out.Message = err.Error()
	}
	writeJSON(w, out)
}

func compact(evs []eventstore.Event) []wire.ReadEvent {
	out := make([]wire.ReadEvent, len(evs))
	for i, e := range evs {
		out[i] = wire.ReadEvent{ID: e.ID, Stream: e.Stream, Version: e.Version, Partition: int(e.Partition), Offset: e.Offset}
	}
	return out
}

func uintParam(r *http.Request, name string) uint64 {
	v, _ := strconv.ParseUint(r.URL.Query().Get(name), 10, 64)
	return v
}

func (a *api) read(w http.ResponseWriter, r *http.Request) {
	p, from, limit := int(uintParam(r, "p")), uintParam(r, "from"), int(uintParam(r, "limit"))
	evs, next, err := a.st.ReadPartition(r.Context(), eventstore.Partition(p), from, limit)
	out := wire.ReadResponse{Events: compact(evs), Next: next}
	if err != nil {
		out.Error = err.Error()
	}
	writeJSON(w, out)
}

func (a *api) stream(w http.ResponseWriter, r *http.Request) {
	s, from, limit := r.URL.Query().Get("s"), uintParam(r, "from"), int(uintParam(r, "limit"))
	evs, err := a.st.ReadStream(r.Context(), s, from, limit)
	out := wire.ReadResponse{Events: compact(evs)}
	if err != nil {
		out.Error = err.Error()
	}
	writeJSON(w, out)
}

// head returns a stream's version and the ID of its last event, after a
// read barrier if asked: the suite's linearizability check reads streams
// this way on nodes other than the one that took the writes.
func (a *api) head(w http.ResponseWriter, r *http.Request) {
	s := r.URL.Query().Get("s")
	var out wire.HeadResponse
	err := func() error {
		if r.URL.Query().Get("barrier") == "1" {
			if err := a.st.Barrier(r.Context()); err != nil {
				return err
			}
		}
		info, err := a.st.Stream(r.Context(), s)
		if err != nil || info.Version == 0 {
			return err
		}
		evs, err := a.st.ReadStream(r.Context(), s, info.Version, 1)
		if err != nil {
			return err
		}
		if len(evs) != 1 || evs[0].Version != info.Version {
			return fmt.Errorf("faultnode: %s has version %d, and a read from it returned %d events", s, info.Version, len(evs))
		}
		out.Version, out.LastID = info.Version, evs[0].ID
		return nil
	}()
	if err != nil {
		out.Error = err.Error()
	}
	writeJSON(w, out)
}

// digest hashes every field of every event of partition p below offset
// upto, in offset order, so replicas compare byte for byte.
func (a *api) digest(w http.ResponseWriter, r *http.Request) {
	p, upto := int(uintParam(r, "p")), uintParam(r, "upto")
	h := sha256.New()
	var out wire.DigestResponse
	var buf []byte
	from := uint64(0)
scan:
	for from < upto {
		evs, next, err := a.st.ReadPartition(r.Context(), eventstore.Partition(p), from, int(min(upto-from, 1000)))
		if err != nil {
			out.Error = err.Error()
			break
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if e.Offset >= upto {
				break scan
			}
			buf = buf[:0]
			buf = binary.BigEndian.AppendUint64(buf, e.Offset)
			buf = append(buf, e.ID[:]...)
			buf = binary.BigEndian.AppendUint64(buf, e.Version)
			buf = binary.BigEndian.AppendUint64(buf, uint64(e.Time.UnixNano()))
			for _, s := range []string{e.Stream, e.Type, string(e.Data), e.Metadata.CorrelationID, e.Metadata.CausationID} {
				buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
				buf = append(buf, s...)
			}
			names := make([]string, 0, len(e.Metadata.Headers))
			for k := range e.Metadata.Headers {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				buf = append(buf, k...)
				buf = append(buf, 0)
				buf = append(buf, e.Metadata.Headers[k]...)
				buf = append(buf, 0)
			}
			h.Write(buf)
			out.Count++
		}
		if from < next {
			from = next
		}
	}
	out.Hash = hex.EncodeToString(h.Sum(nil))
	writeJSON(w, out)
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	s := a.st.Log().Status()
	writeJSON(w, wire.StatusResponse{PID: a.pid, Groups: s.Shards, Heads: s.Partitions})
}

func (a *api) group(w http.ResponseWriter, r *http.Request) {
	s, ok, err := a.st.Log().GroupState(wire.ConsumerGroup)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, wire.GroupResponse{Found: ok, State: s})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
