// Command orders is an order service built on esraft: an Order aggregate
// in the event store, two SQLite read models kept by local projections on
// every node, and a notification handler run as a consumer group that
// sends webhooks through an outbox. One process is the embedded
// single-node default; three processes with -node, -addr and -peers form
// a replicated cluster, and any node accepts any call.
//
//	go run ./examples/orders                       # one node, data in ./data, HTTP on :8080
//	go run ./cmd/esraft certs -dir certs -cluster orders -nodes n1,n2,n3
//	go run ./examples/orders -data d1 -http 127.0.0.1:8081 -node n1 -addr 127.0.0.1:7001 \
//	    -peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003 \
//	    -tls-cluster orders -tls-cert certs/n1.pem -tls-key certs/n1-key.pem -tls-ca certs/ca.pem
//
// The -tls-* flags secure the cluster port with mutual TLS (see
// SECURITY.md); without them membership changes are accepted from
// loopback only, and a cluster port beyond loopback is logged as a WARN.
//
// Logs go to stderr, WARN and above by default; -log-level info shows the
// service's lines (partitions granted, the HTTP address) and -log-format
// json writes them as JSON.
//
// The admin endpoints (/admin/...) and the web console (/ui/, signed in
// with the same token) need a bearer token, set with -admin-token or, to
// keep it out of the process list, the ESRAFT_ADMIN_TOKEN environment
// variable; without one they answer 403.
// The drill endpoints (drills.go) make the notifier fail on purpose, to
// rehearse parked events (esraft parked ls|retry|skip); -no-notifier runs
// a node without its notifier member, so that an operator can reset the
// stopped group (esraft groups reset notifier).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/kafka"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/schema"
)

type config struct {
	data, http, node, addr, peers, join, notifyURL string
	nonVoter                                       bool
	// noNotifier runs the node without its member of the notifier group
	// (the outbox relay still delivers), so that an operator can reset the
	// group once no node runs one.
	noNotifier          bool
	logLevel, logFormat string
	// adminToken is the bearer token of the admin endpoints; "" turns
	// them off.
	adminToken string
	// handoff bounds the leadership hand-off on shutdown (0: the log's
	// default; negative: none, shutdown stops raft as a crash would).
	handoff time.Duration
	// tls: the cluster name and this node's certificate, key and the
	// cluster CA, PEM files; all empty for a plaintext cluster port.
	tlsCluster, tlsCert, tlsKey, tlsCA string
	// timeouts of the HTTP server; zero fields take the defaults.
	timeouts httpTimeouts
	// kafka is the Kafka listener's address ("": none).
	kafka string
}

// httpTimeouts bound how long a client may hold a connection: to send its
// request headers, its whole request, to take the response, and idle
// between requests (the http.Server fields of the same names).
type httpTimeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

var defaultHTTPTimeouts = httpTimeouts{ReadHeader: 5 * time.Second, Read: 30 * time.Second, Write: time.Minute, Idle: 2 * time.Minute}

func (t httpTimeouts) withDefaults() httpTimeouts {
	def := defaultHTTPTimeouts
	or := func(d, dflt time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return dflt
	}
	return httpTimeouts{or(t.ReadHeader, def.ReadHeader), or(t.Read, def.Read), or(t.Write, def.Write), or(t.Idle, def.Idle)}
}

func main() {
	var cfg config
	flag.StringVar(&cfg.data, "data", "./data", "data directory")
	flag.StringVar(&cfg.http, "http", "127.0.0.1:8080", "HTTP listen address")
	flag.StringVar(&cfg.node, "node", "", "node ID (cluster mode)")
	flag.StringVar(&cfg.addr, "addr", "", "cluster address to listen on, host:port (cluster mode)")
	flag.StringVar(&cfg.peers, "peers", "", "static bootstrap: id1=host:port,id2=host:port,... (the same on every node)")
	flag.StringVar(&cfg.join, "join", "", "cluster address of a member to join through")
	flag.BoolVar(&cfg.nonVoter, "worker", false, "join as a non-voting worker node")
	flag.StringVar(&cfg.tlsCluster, "tls-cluster", "", "cluster name in the node certificates (mutual TLS on the cluster port)")
	flag.StringVar(&cfg.tlsCert, "tls-cert", "", "this node's certificate, PEM (reloaded when it changes)")
	flag.StringVar(&cfg.tlsKey, "tls-key", "", "this node's private key, PEM")
	flag.StringVar(&cfg.tlsCA, "tls-ca", "", "the cluster CA certificate(s), PEM")
	flag.BoolVar(&cfg.noNotifier, "no-notifier", false, "run without this node's member of the notifier consumer group (to reset the group: esraft groups reset notifier)")
	flag.StringVar(&cfg.notifyURL, "notify-url", "", "webhook URL for notifications (default: a JSONL file in the data directory)")
	flag.StringVar(&cfg.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	flag.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	flag.StringVar(&cfg.adminToken, "admin-token", "", "bearer token for the /admin endpoints (default $ESRAFT_ADMIN_TOKEN; none: the admin endpoints are off)")
	flag.DurationVar(&cfg.handoff, "handoff-timeout", 0, "bound on handing leadership to another voter at shutdown (default 2s; negative: no hand-off)")
	flag.StringVar(&cfg.kafka, "kafka", "", "Kafka listener address, host:port (default: none; mutual TLS with the -tls-* files); the events are topic esraft.events")
	showVersion := flag.Bool("version", false, "print the version and build of this program and exit")
	flag.Parse()
	if *showVersion {
		info, _ := debug.ReadBuildInfo()
		fmt.Println(versionLine(info))
		return
	}
	if cfg.adminToken == "" {
		cfg.adminToken = os.Getenv("ESRAFT_ADMIN_TOKEN")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// kafkaMaxBatchRecords bounds the events of one append with -kafka: a
// produced batch with more records (franz-go and librdkafka batch up to
// about 1 MB) is appended in several.
const kafkaMaxBatchRecords = 10_000

// app is the running service.
type app struct {
	ctx         context.Context
	store       *eventstore.Store
	schemas     *schema.Registry
	orders      *aggregate.Repository[Order]
	ordersDB    *sqlite.DB
	statsDB     *sqlite.DB
	projections map[string]*projection.Local
	notifier    *projection.Group // nil with -no-notifier
	notify      *notifications
	admin       http.Handler // the operations API (admin.go)
	// protect guards an operator endpoint like the admin API (admin.go).
	protect func(http.HandlerFunc) http.HandlerFunc
}

// run starts the service and serves until ctx ends; ready, if set, is told
// the HTTP address once requests are served, and given the service.
func run(ctx context.Context, cfg config, ready func(httpAddr string, a *app)) error {
	log, err := newLogger(os.Stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return err
	}
	opts, err := storeOptions(cfg)
	if err != nil {
		return err
	}
	opts = append(opts, eventstore.Logger(log))
	if cfg.kafka != "" {
		// A Kafka producer's batch is one append: allow batches of
		// small records as large as producers send by default.
		opts = append(opts, eventstore.MaxAppendEvents(kafkaMaxBatchRecords))
	}
	openCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	store, err := eventstore.Open(openCtx, filepath.Join(cfg.data, "log"), opts...)
	cancel()
	if err != nil {
		return err
	}
	defer store.Close()

	// The schema registry lives in the log: every node validates the
	// appends it takes, and the order events' schemas, derived from their
	// Go types, are registered before anything is written, so a code change
	// that breaks the events already stored stops the node here.
	schemas, err := schema.Open(ctx, store, schema.Logger(log))
	if err != nil {
		return err
	}
	defer schemas.Close()
	orderType := orders()
	openCtx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	_, err = orderType.Registry().RegisterSchemas(openCtx, schemas)
	cancel()
	if err != nil {
		return err
	}

	a := &app{ctx: ctx, store: store, schemas: schemas, projections: map[string]*projection.Local{}}
	a.orders = aggregate.NewRepository(store, orderType, aggregate.WithLogger(log))
	if a.ordersDB, err = sqlite.Open(ctx, filepath.Join(cfg.data, "views", "orders"), ordersSchema...); err != nil {
		return err
	}
	defer a.ordersDB.Close()
	if a.statsDB, err = sqlite.Open(ctx, filepath.Join(cfg.data, "views", "stats"), statsSchema...); err != nil {
		return err
	}
	defer a.statsDB.Close()
	only := projection.Options{Categories: []string{"order"}, Logger: log}
	a.projections["orders"] = projection.NewLocal(store, a.ordersDB, "orders", ordersHandler, only)
	a.projections["stats"] = projection.NewLocal(store, a.statsDB, "stats", statsHandler, only)

	notify, err := startNotifications(ctx, store, cfg, log)
	if err != nil {
		return err
	}
	defer notify.close()
	a.notify = notify
	if !cfg.noNotifier {
		a.notifier = notify.group
	}

	runners := make(chan error, 3)
	for name, p := range a.projections {
		go func() {
			if err := p.Run(ctx); err != nil {
				runners <- fmt.Errorf("projection %s: %w", name, err)
			}
		}()
	}
	if a.notifier != nil {
		go func() {
			if err := a.notifier.Run(ctx); err != nil {
				runners <- fmt.Errorf("notifier: %w", err)
			}
		}()
	}

	if a.admin, err = a.adminHandler(cfg.adminToken); err != nil {
		return err
	}
	if cfg.kafka != "" {
		kc := kafka.Config{Store: store, Addr: cfg.kafka, Logger: log, MaxRecordsPerAppend: kafkaMaxBatchRecords}
		if cfg.tlsCert != "" {
			// The cluster's identities on the Kafka port too: clients
			// present a node or worker certificate of the cluster's CA.
			// A node's own TLS follows a rotation of its files.
			if l := store.Log(); l != nil {
				kc.TLS = l.ListenerTLS()
			} else if kc.TLS, err = kafka.ClusterTLS(cfg.tlsCluster, cfg.tlsCert, cfg.tlsKey, cfg.tlsCA); err != nil {
				return err
			}
		}
		ks, err := kafka.Listen(kc)
		if err != nil {
			return err
		}
		defer ks.Close()
		log.Info("kafka listener", "addr", ks.Addr())
	}
	ln, err := net.Listen("tcp", cfg.http)
	if err != nil {
		return err
	}
	t := cfg.timeouts.withDefaults()
	srv := &http.Server{Handler: a.routes(),
		ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, WriteTimeout: t.Write, IdleTimeout: t.Idle}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", "http", ln.Addr().String(), "node", store.Log().NodeID(), "cluster", store.Log().Addr())
	if ready != nil {
		ready(ln.Addr().String(), a)
	}
	select {
	case <-ctx.Done():
	case err = <-served:
	case err = <-runners:
	}
	shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shut)
	log.Info("stopped")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// storeOptions turns the cluster flags into store options.
func storeOptions(cfg config) ([]eventstore.Option, error) {
	if cfg.node == "" && cfg.addr == "" {
		if cfg.peers != "" || cfg.join != "" || cfg.tlsCert != "" {
			return nil, errors.New("-peers, -join and -tls-* need -node and -addr")
		}
		return nil, nil
	}
	if cfg.node == "" || cfg.addr == "" {
		return nil, errors.New("cluster mode needs both -node and -addr")
	}
	opts := []eventstore.Option{eventstore.Node(cfg.node, cfg.addr)}
	if cfg.handoff != 0 {
		opts = append(opts, eventstore.LogConfig(func(c *raftlog.Config) { c.HandoffTimeout = cfg.handoff }))
	}
	if cfg.peers != "" {
		var peers []eventstore.Peer
		for _, p := range strings.Split(cfg.peers, ",") {
			id, addr, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || id == "" || addr == "" {
				return nil, fmt.Errorf("-peers: %q is not id=host:port", p)
			}
			peers = append(peers, eventstore.Peer{ID: id, Addr: addr})
		}
		opts = append(opts, eventstore.Peers(peers...))
	}
	if cfg.join != "" {
		opts = append(opts, eventstore.Join(cfg.join))
	}
	if cfg.nonVoter {
		opts = append(opts, eventstore.NonVoter())
	}
	if tls := []string{cfg.tlsCluster, cfg.tlsCert, cfg.tlsKey, cfg.tlsCA}; strings.Join(tls, "") != "" {
		for _, f := range tls {
			if f == "" {
				return nil, errors.New("TLS needs all of -tls-cluster, -tls-cert, -tls-key and -tls-ca")
			}
		}
		opts = append(opts, eventstore.TLSFiles(cfg.tlsCluster, cfg.tlsCert, cfg.tlsKey, cfg.tlsCA))
	}
	return opts, nil
}

// newLogger builds the service's one logger from its -log-level and
// -log-format flags; every layer of the library logs through it.
// Empty means warn and text.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl := slog.LevelWarn
	if level != "" && lvl.UnmarshalText([]byte(level)) != nil {
		return nil, fmt.Errorf("-log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: use text or json", format)
}
