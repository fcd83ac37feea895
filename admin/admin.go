// Package admin is the operations interface of an esraft service: an
// http.Handler a service mounts beside its own routes (as it would
// net/http/pprof) that serves
//
//	/admin/...   a JSON API over the cluster, streams, partitions,
//	             consumer groups and this node's projections
//	/metrics     Prometheus metrics (see Collector)
//	/healthz     the process is alive
//	/readyz      this node can serve: every shard has a leader and this
//	             node has applied close to it
//	/ui/         the web console: pages over the same API (console.go),
//	             signed in with the admin token or a client certificate
//
// Every field of every JSON body is snake_case; errors are
// {"error": "...", "code": "..."} with a status code that says what
// happened (400 bad input, 401 not authenticated, 404 unknown, 409
// conflict, 503 no leader); a reset or delete of a consumer group with
// live members is a 409 with code "group_active" and their IDs in
// "members" (GroupActiveError). Every /admin and /metrics request must be
// authenticated by the admin bearer token or a client certificate naming
// an identity of the cluster (Config); /healthz and /readyz are open, as
// load balancers and orchestrators probe them. cmd/esraft is the command
// line over this API.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/internal/nodecert"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/schema"
)

// Config is what the handler serves and whom it lets in.
type Config struct {
	// Store is the node's event store (and, through it, its log).
	Store *eventstore.Store
	// Projections are this node's local projections, by name.
	Projections map[string]*projection.Local
	// Token is the admin bearer token ("Authorization: Bearer <token>").
	Token string
	// ClientCAs and Cluster admit a client certificate instead of the
	// token: one that chains to ClientCAs and names an identity of
	// Cluster (esraft://<Cluster>/node/<id> or /worker/<id>, see
	// SECURITY.md). The server must ask for client certificates
	// (tls.Config.ClientAuth at least RequestClientCert); the handler
	// verifies the chain itself.
	ClientCAs *x509.CertPool
	Cluster   string
	// Outboxes and Dedups are SQLite databases holding package outbox's
	// and package dedup's tables, by a name used as their metrics' label
	// (WithOutbox, WithDedup): each scrape counts their rows.
	Outboxes, Dedups map[string]*sql.DB
	// Registry, if set, is served at /metrics as it is; nil makes one with
	// a Collector of Store, Projections, Outboxes and Dedups, and the Go
	// runtime's and the process's collectors (go_*, process_*).
	Registry *prometheus.Registry
	// Schemas, if set, is served under /admin/schemas as Confluent Schema
	// Registry's REST API (package schema's Handler: a Kafka serializer's
	// or tool's base URL is http://host/admin/schemas), behind the same
	// authentication as every admin endpoint (Confluent's clients send
	// the token as a bearer token).
	Schemas *schema.Registry
	// ReadyMaxBehind is how many raft entries this node may be behind a
	// shard's commit index and still be ready (default 1024).
	ReadyMaxBehind uint64
	// ProbeTimeout bounds each peer probe of the cluster status (default
	// 1 s).
	ProbeTimeout time.Duration
	Logger       *slog.Logger
	// Context is the service's lifetime: work the API starts that
	// outlives its request (a projection rebuild) stops when it ends
	// (default: never).
	Context context.Context
}

// Validate checks that the handler can serve and authenticate.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("admin: Config.Store is required")
	case c.Token == "" && c.ClientCAs == nil:
		return errors.New("admin: set Config.Token or Config.ClientCAs: the admin API is never open")
	case c.ClientCAs != nil && !nodecert.ValidName(c.Cluster):
		return fmt.Errorf("admin: Config.Cluster %q is not a valid cluster name (needed with ClientCAs)", c.Cluster)
	}
	return nil
}

// Handler serves the admin API, /metrics, /healthz, /readyz and the
// console.
type Handler struct {
	cfg     Config
	mux     *http.ServeMux
	token   [32]byte
	sessKey []byte // console sessions (session.go)
	// crossOrigin refuses changing requests from other origins.
	crossOrigin *http.CrossOriginProtection
	log         *slog.Logger
	// backupRunning is set while a backup streams (backup.go).
	backupRunning atomic.Bool
}

var _ http.Handler = (*Handler)(nil)

// New returns the handler of cfg.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ReadyMaxBehind == 0 {
		cfg.ReadyMaxBehind = defaultReadyMaxBehind
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = time.Second
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	if cfg.Logger == nil {
		cfg.Logger = cfg.Store.Logger()
	}
	if cfg.Registry == nil {
		var opts []CollectorOption
		for name, db := range cfg.Outboxes {
			opts = append(opts, WithOutbox(name, db))
		}
		for name, db := range cfg.Dedups {
			opts = append(opts, WithDedup(name, db))
		}
		cfg.Registry = prometheus.NewRegistry()
		for _, c := range []prometheus.Collector{
			NewCollector(cfg.Store, cfg.Projections, opts...),
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("admin: %w", err)
			}
		}
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger, crossOrigin: http.NewCrossOriginProtection(),
		sessKey: sessionKey(cfg.Token)}
	if cfg.Token != "" {
		h.token = sha256.Sum256([]byte(cfg.Token))
	}
	h.routes()
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) routes() {
	m := h.mux
	m.HandleFunc("GET /healthz", h.healthz)
	m.HandleFunc("GET /readyz", h.readyz)
	m.Handle("GET /metrics", h.auth(promhttp.HandlerFor(h.cfg.Registry, promhttp.HandlerOpts{ErrorLog: slogErrorLog{h.log}}).ServeHTTP))

	m.HandleFunc("GET /admin/status", h.auth(h.status))
	if h.cfg.Schemas != nil {
		m.Handle("/admin/schemas/", h.auth(http.StripPrefix("/admin/schemas", schema.Handler(h.cfg.Schemas)).ServeHTTP))
	}
	m.HandleFunc("POST /admin/cluster/nodes", h.auth(h.addNode))
	m.HandleFunc("DELETE /admin/cluster/nodes/{id}", h.auth(h.removeNode))
	m.HandleFunc("POST /admin/cluster/nodes/{id}/promote", h.auth(h.promoteNode))
	m.HandleFunc("POST /admin/cluster/shards/{shard}/transfer", h.auth(h.transfer))
	m.HandleFunc("POST /admin/cluster/rebalance", h.auth(h.rebalance))
	m.HandleFunc("GET /admin/backup", h.auth(h.backup))
	m.HandleFunc("GET /admin/keys", h.auth(h.exportKeys))
	m.HandleFunc("POST /admin/keys", h.auth(h.importKeys))

	m.HandleFunc("GET /admin/streams", h.auth(h.listStreams))
	m.HandleFunc("GET /admin/streams/{stream}", h.auth(h.streamInfo))
	m.HandleFunc("GET /admin/streams/{stream}/events", h.auth(h.readStream))
	m.HandleFunc("GET /admin/streams/{stream}/tail", h.auth(h.tailStream))
	m.HandleFunc("DELETE /admin/streams/{stream}", h.auth(h.deleteStream))
	m.HandleFunc("POST /admin/streams/{stream}/truncate", h.auth(h.truncateStream))
	m.HandleFunc("PUT /admin/streams/{stream}/retention", h.auth(h.setStreamRetention))
	m.HandleFunc("PUT /admin/categories/{category}/retention", h.auth(h.setCategoryRetention))
	m.HandleFunc("POST /admin/scavenge", h.auth(h.scavenge))

	m.HandleFunc("GET /admin/events/{id}", h.auth(h.eventByID))

	m.HandleFunc("GET /admin/partitions", h.auth(h.partitions))
	m.HandleFunc("GET /admin/partitions/{partition}/events", h.auth(h.readPartition))
	m.HandleFunc("GET /admin/partitions/{partition}/tail", h.auth(h.tailPartition))

	m.HandleFunc("GET /admin/groups", h.auth(h.listGroups))
	m.HandleFunc("GET /admin/groups/{group}", h.auth(h.describeGroup))
	m.HandleFunc("DELETE /admin/groups/{group}", h.auth(h.deleteGroup))
	m.HandleFunc("POST /admin/groups/{group}/reset", h.auth(h.resetGroup))
	m.HandleFunc("GET /admin/groups/{group}/parked", h.auth(h.groupParked))
	m.HandleFunc("POST /admin/groups/{group}/parked/{partition}/{offset}/retry", h.auth(h.retryGroupParked))
	m.HandleFunc("POST /admin/groups/{group}/parked/{partition}/{offset}/skip", h.auth(h.skipGroupParked))

	m.HandleFunc("GET /admin/projections", h.auth(h.listProjections))
	m.HandleFunc("GET /admin/projections/{name}", h.auth(h.projectionStatus))
	m.HandleFunc("POST /admin/projections/{name}/rebuild", h.auth(h.rebuild))
	m.HandleFunc("GET /admin/projections/{name}/parked", h.auth(h.projectionParked))
	m.HandleFunc("POST /admin/projections/{name}/parked/{partition}/{offset}/retry", h.auth(h.retryProjectionParked))
	m.HandleFunc("POST /admin/projections/{name}/parked/{partition}/{offset}/skip", h.auth(h.skipProjectionParked))

	h.consoleRoutes()

	m.HandleFunc("/admin/", h.auth(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no admin route %s %s", r.Method, r.URL.Path))
	}))
}

// Protect wraps next, an operator endpoint of the service's own, in the
// admin API's authentication: the admin token or a client certificate.
func (h *Handler) Protect(next http.HandlerFunc) http.HandlerFunc { return h.auth(next) }

// auth lets a request through with the admin token, a console session
// (session.go) or a client certificate of the cluster; anything else is a
// 401 that says what to send. A changing request from another origin is
// refused whatever its credentials, and one authenticated by a console
// session must carry the session's CSRF token.
func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h.crossOrigin.Check(r); err != nil {
			writeError(w, http.StatusForbidden, "cross_origin", "a changing request from another origin is refused: "+err.Error())
			return
		}
		cred, fail := h.authenticate(r)
		if fail != nil {
			if fail.challenge != "" {
				w.Header().Set("WWW-Authenticate", fail.challenge)
			}
			writeError(w, http.StatusUnauthorized, "unauthorized", fail.msg)
			return
		}
		if cred.session != "" && !h.checkCSRF(r, cred.session) {
			writeError(w, http.StatusForbidden, "csrf", "a change made through the console's session needs the CSRF token of its page (X-CSRF-Token): reload the console")
			return
		}
		next(w, r)
	}
}

// credential is how a request was authenticated.
type credential struct {
	// session is the console session's cookie value, when the session
	// authenticated the request.
	session string
	// identity is the client certificate's identity, when one did.
	identity string
}

// authFailure says why a request was not authenticated.
type authFailure struct{ msg, challenge string }

// authenticate checks, in this order, a bearer token (compared in
// constant time, through SHA-256 so that its length does not show), a
// console session and a client certificate.
func (h *Handler) authenticate(r *http.Request) (credential, *authFailure) {
	if h.cfg.Token != "" {
		if tok, ok := bearerToken(r); ok {
			if h.tokenMatches(tok) {
				return credential{}, nil
			}
			return credential{}, &authFailure{msg: "the admin token is wrong", challenge: `Bearer realm="esraft admin", error="invalid_token"`}
		}
	}
	if s, err := h.session(r); err == nil {
		return credential{session: s}, nil
	}
	if h.cfg.ClientCAs != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		id, err := h.clientIdentity(r)
		if err != nil {
			return credential{}, &authFailure{msg: "client certificate refused: " + err.Error()}
		}
		h.log.Debug("admin: request by certificate", "identity", id.String(), "path", r.URL.Path)
		return credential{identity: id.String()}, nil
	}
	var how []string
	f := &authFailure{}
	if h.cfg.Token != "" {
		how = append(how, "the admin token (Authorization: Bearer <token>)")
		f.challenge = `Bearer realm="esraft admin"`
	}
	if h.cfg.ClientCAs != nil {
		how = append(how, fmt.Sprintf("a client certificate naming an identity of cluster %q", h.cfg.Cluster))
	}
	f.msg = "the admin API needs " + strings.Join(how, " or ")
	return credential{}, f
}

// tokenMatches compares tok with the admin token in constant time.
func (h *Handler) tokenMatches(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return h.cfg.Token != "" && subtle.ConstantTimeCompare(sum[:], h.token[:]) == 1
}

// clientIdentity verifies the request's client certificate against
// ClientCAs and returns the identity it names.
func (h *Handler) clientIdentity(r *http.Request) (nodecert.Identity, error) {
	certs := r.TLS.PeerCertificates
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: h.cfg.ClientCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nodecert.Identity{}, err
	}
	return nodecert.Parse(certs[0], h.cfg.Cluster)
}

// bearerToken is the token of an "Authorization: Bearer <token>" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, Error{Error: msg, Code: code})
}

// writeStoreError answers an error of the store or the log with the
// status that says what happened.
func (h *Handler) writeStoreError(w http.ResponseWriter, err error) {
	var wrong *eventstore.WrongVersionError
	switch {
	case errors.As(err, &wrong):
		writeError(w, http.StatusConflict, "wrong_version", err.Error())
	case errors.Is(err, eventstore.ErrStreamDeleted):
		writeError(w, http.StatusGone, "stream_deleted", err.Error())
	case errors.Is(err, eventstore.ErrUnknownPartition):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, eventstore.ErrEmptyStream), errors.Is(err, eventstore.ErrStreamNameTooLong):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, eventstore.ErrUnavailable), errors.Is(err, eventstore.ErrUnknownOutcome):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	case errors.Is(err, eventstore.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "closed", err.Error())
	default:
		h.log.Warn("admin: request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// queryUint reads an unsigned query parameter, def when absent.
func queryUint(r *http.Request, name string, def uint64) (uint64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("query parameter %s=%q is not a non-negative integer", name, s)
	}
	return v, nil
}

// queryLimit reads the limit parameter: def when absent, 1..max.
func queryLimit(r *http.Request, def, max int) (int, error) {
	v, err := queryUint(r, "limit", uint64(def))
	if err != nil {
		return 0, err
	}
	if v < 1 || v > uint64(max) {
		return 0, fmt.Errorf("query parameter limit=%d is out of range 1..%d", v, max)
	}
	return int(v), nil
}

// pathUint reads an unsigned path value.
func pathUint(r *http.Request, name string) (uint64, error) {
	v, err := strconv.ParseUint(r.PathValue(name), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a non-negative integer", name, r.PathValue(name))
	}
	return v, nil
}

// partitionParam reads the partition path value and checks its range.
func (h *Handler) partitionParam(r *http.Request) (eventstore.Partition, error) {
	v, err := pathUint(r, "partition")
	if err != nil {
		return 0, err
	}
	if n := h.cfg.Store.Partitions(); v >= uint64(n) {
		return 0, fmt.Errorf("partition %d does not exist (partitions 0..%d)", v, n-1)
	}
	return eventstore.Partition(v), nil
}

// decodeBody reads a JSON request body of at most 64 KiB into v,
// refusing unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// slogErrorLog adapts the logger for promhttp.
type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) { s.l.Warn("admin: metrics: " + fmt.Sprint(v...)) }
