// Command faultnode runs one eventstore node for the fault-injection suite
// (package internal/faulttest): a voter of a statically bootstrapped
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
//	GET  /digest   ?p=&upto=          SHA-256 of every field of offsets [0, upto)
//	GET  /status                      pid, raft groups, partition heads
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/faulttest/wire"
	"github.com/esraft/esraft/raftlog"
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
		logLevel   = flag.String("log-level", "info", "raft log level")
	)
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix(*id + " ")
	if err := run(*id, *dir, *advertise, *peers, *source, *ready, *partitions, *groups,
		func(c *raftlog.Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = *heartbeat, *election, *lease
			c.SnapshotThreshold, c.SnapshotInterval, c.TrailingLogs = *snapThresh, *snapEvery, *trailing
			c.LogOutput, c.LogLevel = os.Stderr, *logLevel
		}); err != nil {
		log.Fatal(err)
	}
}

func run(id, dir, advertise, peerList, source, ready string, partitions, groups int, tune func(*raftlog.Config)) error {
	if id == "" || dir == "" || advertise == "" || peerList == "" || ready == "" {
		return errors.New("faultnode: -id, -dir, -advertise, -peers and -ready are required")
	}
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
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := eventstore.Open(ctx, dir,
		eventstore.Node(id, advertise), eventstore.Peers(peers...),
		eventstore.Partitions(partitions),
		eventstore.LogConfig(func(c *raftlog.Config) {
			c.Groups = groups
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
	srv := &http.Server{Handler: newAPI(st), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(httpLn) }()
	info, _ := json.Marshal(wire.Ready{PID: os.Getpid(), Cluster: clusterLn.Addr().String(), HTTP: httpLn.Addr().String()})
	if err := writeAtomic(ready, info); err != nil {
		return err
	}
	log.Printf("serving: %s", info)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Printf("%v: closing", s)
	case err := <-serveErr:
		return err
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	return st.Close()
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
	mux.HandleFunc("GET /digest", a.digest)
	mux.HandleFunc("GET /status", a.status)
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
			Outcome: wire.OutcomeOK, Partition: res.Partition, FirstOffset: res.FirstOffset,
			FirstVersion: res.FirstVersion, LastVersion: res.LastVersion, Duplicate: res.Duplicate,
			Group: res.Position.Group, Index: res.Position.Index,
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
		out[i] = wire.ReadEvent{ID: e.ID, Stream: e.Stream, Version: e.Version, Partition: e.Partition, Offset: e.Offset}
	}
	return out
}

func uintParam(r *http.Request, name string) uint64 {
	v, _ := strconv.ParseUint(r.URL.Query().Get(name), 10, 64)
	return v
}

func (a *api) read(w http.ResponseWriter, r *http.Request) {
	p, from, limit := int(uintParam(r, "p")), uintParam(r, "from"), int(uintParam(r, "limit"))
	evs, next, err := a.st.ReadPartition(r.Context(), p, from, limit)
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
		evs, next, err := a.st.ReadPartition(r.Context(), p, from, int(min(upto-from, 1000)))
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
	writeJSON(w, wire.StatusResponse{PID: a.pid, Groups: s.Groups, Heads: s.Partitions})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
