package kafka

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/esraft/esraft/eventstore"
)

// Config configures a Server. Store is required; everything else has a
// default.
type Config struct {
	// Store is the event store the topics live in.
	Store *eventstore.Store
	// Addr is the address to listen on ("127.0.0.1:9092"; ":0" picks a
	// port).
	Addr string
	// AdvertisedAddr is the host:port clients are told to connect to
	// (default: the listener's address).
	AdvertisedAddr string
	// BrokerID is this node's broker ID in metadata (default: a stable
	// hash of the log's node ID, 0 for an embedded single node).
	BrokerID int32
	// TLS, if set, serves the listener over TLS with this configuration
	// (require and verify client certificates in it for mutual TLS).
	TLS *tls.Config
	// AutoCreateTopics creates a topic a client asks for in Metadata
	// (when the request allows it) with DefaultPartitions partitions.
	// Default true; set DisableAutoCreate to turn it off.
	DisableAutoCreate bool
	// DefaultPartitions is the partition count of an auto-created topic
	// (default 1, as Kafka's num.partitions).
	DefaultPartitions int32
	// MaxRequestBytes bounds one request (default 16 MiB); a larger one
	// closes the connection before its body is read.
	MaxRequestBytes int
	// MaxConns bounds the open connections (default 1,024); one more is
	// closed at accept.
	MaxConns int
	// MaxRecordsPerAppend is the most records of one append: a produced
	// batch with more is appended in several (default 1,000, the store's
	// default MaxAppendEvents; set it to the store's).
	MaxRecordsPerAppend int
	// IdleTimeout closes a connection that sends no request for this long
	// (default 10 minutes, as Kafka's connections.max.idle.ms).
	IdleTimeout time.Duration
	// InitialRebalanceDelay is how long a new (empty) group waits for
	// more members before its first generation (Kafka's
	// group.initial.rebalance.delay.ms; default 0).
	InitialRebalanceDelay time.Duration
	// Logger receives the server's lines (default: the store's logger).
	Logger *slog.Logger
}

// Limits of what a client may ask for.
const (
	defaultMaxRequestBytes = 16 << 20
	defaultMaxConns        = 1024
	defaultIdleTimeout     = 10 * time.Minute
	// defaultMaxRecordsPerAppend is the store's default MaxAppendEvents.
	defaultMaxRecordsPerAppend = 1000
	// streamLockCount stripes the locks that keep a produced batch's
	// appends together.
	streamLockCount = 64
	// requestReadTimeout bounds the arrival of a request's body once its
	// size has arrived.
	requestReadTimeout = 30 * time.Second
	// handshakeTimeout bounds a TLS handshake.
	handshakeTimeout = 10 * time.Second
	// maxPartitionsPerTopic bounds CreateTopics and auto-creation.
	maxPartitionsPerTopic = 10_000
	// maxWait bounds a fetch's long poll and a produce's timeout,
	// whatever the client asks.
	maxWait = 30 * time.Second
	// maxFetchBytes bounds one fetch response.
	maxFetchBytes = 32 << 20
)

// Validate fills defaults and checks cfg.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("kafka: Config.Store is required")
	}
	if c.DefaultPartitions == 0 {
		c.DefaultPartitions = 1
	}
	if c.DefaultPartitions < 0 || c.DefaultPartitions > maxPartitionsPerTopic {
		return fmt.Errorf("kafka: DefaultPartitions %d outside 1..%d", c.DefaultPartitions, maxPartitionsPerTopic)
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = defaultMaxRequestBytes
	}
	if c.MaxConns <= 0 {
		c.MaxConns = defaultMaxConns
	}
	if c.MaxRecordsPerAppend <= 0 {
		c.MaxRecordsPerAppend = defaultMaxRecordsPerAppend
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.Logger == nil {
		c.Logger = c.Store.Logger()
	}
	if c.BrokerID < 0 {
		return fmt.Errorf("kafka: BrokerID %d is negative", c.BrokerID)
	}
	if c.BrokerID == 0 {
		if l := c.Store.Log(); l != nil && l.NodeID() != "" {
			h := fnv.New32a()
			h.Write([]byte(l.NodeID()))
			c.BrokerID = int32(h.Sum32() & 0x7fffffff)
		}
	}
	return nil
}

// Server is a Kafka listener over an event store.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *eventstore.Store
	ln      net.Listener
	host    string
	port    int32
	topics  *topics
	groups  *coordinator
	brokers *brokers
	// streamLocks serialize produced batches per stream (striped).
	streamLocks [streamLockCount]sync.Mutex

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Listen validates cfg, listens on cfg.Addr and serves Kafka clients
// until Close.
func Listen(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("kafka: listen: %w", err)
	}
	adv := cfg.AdvertisedAddr
	if adv == "" {
		adv = ln.Addr().String()
	}
	host, portStr, err := net.SplitHostPort(adv)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil {
		ln.Close()
		return nil, fmt.Errorf("kafka: advertised address %q is not host:port", adv)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("component", "kafka"), store: cfg.Store,
		ln: ln, host: host, port: int32(port),
		ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{},
	}
	s.topics = newTopics(cfg.Store)
	s.groups = newCoordinator(s)
	s.brokers = newBrokers(cfg.Store)
	if l := cfg.Store.Log(); l != nil && l.NodeID() != "" {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.brokers.register(ctx, brokerRecord{NodeID: l.NodeID(), BrokerID: cfg.BrokerID, Host: host, Port: int32(port)})
		}()
	}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		s.runRetention(ctx)
	}()
	go s.accept()
	go func() {
		defer s.wg.Done()
		s.groups.run(ctx)
	}()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops accepting, closes every connection, waits for their
// handlers and the group coordinator to stop. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("kafka: accept failed", "err", err)
			select {
			case <-time.After(50 * time.Millisecond): // a burst of accept errors (EMFILE) must not spin
			case <-s.ctx.Done():
				return
			}
			continue
		}
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// request is one decoded request with its header.
type request struct {
	key, version int16
	correlation  int32
	clientID     string
	msg          kmsg.Request
}

// errFraming ends a connection: Kafka closes a connection whose request
// it cannot frame or decode, since the rest of the stream cannot be
// trusted.
var errFraming = errors.New("kafka: bad request framing")

// readBody reads a request's body once its 4-byte size arrived: at
// least a header's worth and at most max bytes, into buf if it fits.
func readBody(r io.Reader, size [4]byte, max int, buf []byte) ([]byte, error) {
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 10 || int(n) > max {
		return nil, fmt.Errorf("%w: request of %d bytes (at least 10, at most %d)", errFraming, n, max)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// parseRequest decodes a request's header and body. Request header v1
// (v2 for flexible versions: v1 and tagged fields) is api key, version,
// correlation ID and a nullable client ID; kmsg decodes the body.
func parseRequest(b []byte) (request, error) {
	var req request
	if len(b) < 10 {
		return req, fmt.Errorf("%w: %d bytes, shorter than a request header", errFraming, len(b))
	}
	req.key = int16(binary.BigEndian.Uint16(b))
	req.version = int16(binary.BigEndian.Uint16(b[2:]))
	req.correlation = int32(binary.BigEndian.Uint32(b[4:]))
	idLen := int16(binary.BigEndian.Uint16(b[8:]))
	b = b[10:]
	if idLen > 0 {
		if int(idLen) > len(b) {
			return req, fmt.Errorf("%w: client ID past the end", errFraming)
		}
		req.clientID = string(b[:idLen])
		b = b[idLen:]
	} else if idLen < -1 {
		return req, fmt.Errorf("%w: client ID length %d", errFraming, idLen)
	}
	msg := kmsg.RequestForKey(req.key)
	if msg == nil {
		return req, &unsupportedError{key: req.key, version: req.version}
	}
	msg.SetVersion(req.version)
	if _, ok := handlers[req.key]; !ok || !supported(req.key, req.version) {
		return req, &unsupportedError{key: req.key, version: req.version}
	}
	if msg.IsFlexible() {
		var err error
		if b, err = skipTags(b); err != nil {
			return req, err
		}
	}
	if err := msg.ReadFrom(b); err != nil {
		return req, fmt.Errorf("%w: %s v%d: %v", errFraming, kmsg.NameForKey(req.key), req.version, err)
	}
	req.msg = msg
	return req, nil
}

// skipTags skips a tagged-field section (a uvarint count, then per field
// a uvarint tag, a uvarint size and the bytes).
func skipTags(b []byte) ([]byte, error) {
	n, l := binary.Uvarint(b)
	if l <= 0 || n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: bad tagged fields", errFraming)
	}
	b = b[l:]
	for i := uint64(0); i < n; i++ {
		if _, l = binary.Uvarint(b); l <= 0 {
			return nil, fmt.Errorf("%w: bad tagged field", errFraming)
		}
		b = b[l:]
		size, l := binary.Uvarint(b)
		if l <= 0 || size > uint64(len(b)-l) {
			return nil, fmt.Errorf("%w: bad tagged field", errFraming)
		}
		b = b[l+int(size):]
	}
	return b, nil
}

// unsupportedError is a request of an API or version this server does not
// serve.
type unsupportedError struct{ key, version int16 }

func (e *unsupportedError) Error() string {
	return fmt.Sprintf("kafka: %s (key %d) v%d is not supported", kmsg.NameForKey(e.key), e.key, e.version)
}

func (s *Server) serveConn(c net.Conn) {
	var buf, out []byte
	remote := c.RemoteAddr().String()
	if tc, ok := c.(*tls.Conn); ok {
		// The handshake, not the idle timeout, bounds a client that
		// connects and says nothing.
		ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.log.Debug("kafka: TLS handshake failed", "remote", remote, "err", err)
			return
		}
	}
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		var size [4]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(requestReadTimeout))
		b, err := readBody(c, size, s.cfg.MaxRequestBytes, buf)
		if err != nil {
			s.log.Debug("kafka: connection closed", "remote", remote, "err", err)
			return
		}
		buf = b[:0]
		req, err := parseRequest(b)
		var ue *unsupportedError
		if errors.As(err, &ue) && req.key == apiVersionsKey {
			// A client asking ApiVersions at a version we do not know
			// gets the v0 answer with UNSUPPORTED_VERSION and our
			// versions, as Kafka does, and then asks again.
			out = s.writeResponse(c, out[:0], req, s.apiVersionsUnsupported(), false)
			continue
		}
		if err != nil {
			s.log.Debug("kafka: closing connection on an unreadable request", "remote", remote, "err", err)
			return
		}
		resp := handlers[req.key](s, req)
		if resp == nil { // Produce with acks=0: no answer
			continue
		}
		out = s.writeResponse(c, out[:0], req, resp, req.msg.IsFlexible() && req.key != apiVersionsKey)
		if out == nil {
			return
		}
		if cap(out) > 1<<20 {
			out = nil // do not keep a large response's buffer per idle connection
		}
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
}

// writeResponse writes resp with the response header (v0: correlation ID;
// v1 adds an empty tagged-field section), framed by its size. It returns
// nil if the write failed.
func (s *Server) writeResponse(c net.Conn, out []byte, req request, resp kmsg.Response, flexibleHeader bool) []byte {
	out = append(out, 0, 0, 0, 0)
	out = binary.BigEndian.AppendUint32(out, uint32(req.correlation))
	if flexibleHeader {
		out = append(out, 0)
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	c.SetWriteDeadline(time.Now().Add(requestReadTimeout))
	if _, err := c.Write(out); err != nil {
		return nil
	}
	return out
}
