package raftlog

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/internal/nodecert"
)

// TLSConfig secures the cluster address with mutual TLS 1.3: every
// connection, raft's and node-to-node calls alike, presents a certificate
// signed by the cluster's CA that names the node (see SECURITY.md):
//
//	esraft://<Cluster>/node/<node-id>     a voter
//	esraft://<Cluster>/worker/<node-id>   a worker: only ever a non-voter
//
// This node's certificate must name Config.NodeID, and a worker
// certificate needs Config.NonVoter. Plaintext connections are refused.
// Give either the three files or Config.
type TLSConfig struct {
	// Cluster is the cluster name certificates carry.
	Cluster string
	// CertFile and KeyFile are this node's certificate (PEM, optionally
	// followed by intermediates) and private key; CAFile the PEM CA
	// certificates peers' certificates must chain to (during a CA rotation,
	// the old and the new CA).
	CertFile, KeyFile, CAFile string
	// Config, instead of files: its Certificates[0] is this node's and its
	// RootCAs (or ClientCAs) the cluster CA. Other fields are ignored: the
	// log sets TLS 1.3 and its own verification.
	Config *tls.Config
	// ReloadInterval is how often the files' modification times are
	// polled; a change reloads them (default 10s; negative: never, only
	// Log.ReloadTLS). A file that fails to load keeps the previous
	// material, with a WARN, and is tried again at the next poll.
	ReloadInterval time.Duration
}

func (c *TLSConfig) validate(nodeID string) error {
	files := c.CertFile != "" || c.KeyFile != "" || c.CAFile != ""
	switch {
	case !nodecert.ValidName(c.Cluster):
		return fmt.Errorf("TLS.Cluster %q is not a valid cluster name", c.Cluster)
	case !nodecert.ValidName(nodeID):
		return fmt.Errorf("NodeID %q cannot be named in a certificate", nodeID)
	case files && c.Config != nil:
		return errors.New("TLS: give either files or Config")
	case c.Config == nil && (c.CertFile == "" || c.KeyFile == "" || c.CAFile == ""):
		return errors.New("TLS needs CertFile, KeyFile and CAFile (or Config)")
	case c.Config != nil && (len(c.Config.Certificates) == 0 || (c.Config.RootCAs == nil && c.Config.ClientCAs == nil)):
		return errors.New("TLS.Config needs Certificates and RootCAs")
	}
	return nil
}

// tlsMaterial is one generation of certificate, key and CA.
type tlsMaterial struct {
	cert  *tls.Certificate
	roots *x509.CertPool
}

// clusterTLS is a node's TLS: the material in force (swapped whole on a
// reload, read by every handshake) and the two tls.Configs built on it.
type clusterTLS struct {
	cfg    TLSConfig
	self   nodecert.Identity // what our own certificate must say, role aside
	worker bool              // this node is a non-voter: a worker certificate is fine
	logger *slog.Logger

	cur    atomic.Pointer[tlsMaterial]
	mu     sync.Mutex // serializes reloads
	mtimes [3]time.Time

	server, client *tls.Config
}

func newClusterTLS(cfg *Config, logger *slog.Logger) (*clusterTLS, error) {
	t := &clusterTLS{cfg: *cfg.TLS, self: nodecert.Identity{Cluster: cfg.TLS.Cluster, NodeID: cfg.NodeID},
		worker: cfg.NonVoter, logger: logger}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	t.server = &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert, // verified by VerifyConnection against the current CA
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cur.Load().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := t.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
	t.client = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Raft dials addresses, not names: the chain and the node
		// identity are verified by VerifyConnection instead.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return t.cur.Load().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := t.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
	return t, nil
}

// verify checks a peer's chain against the current CA and returns the
// node identity of its leaf.
func (t *clusterTLS) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (nodecert.Identity, error) {
	if len(chain) == 0 {
		return nodecert.Identity{}, errors.New("raftlog: peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: t.cur.Load().roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return nodecert.Identity{}, fmt.Errorf("raftlog: peer certificate: %w", err)
	}
	id, err := nodecert.Parse(chain[0], t.cfg.Cluster)
	if err != nil {
		return nodecert.Identity{}, fmt.Errorf("raftlog: peer certificate: %w", err)
	}
	return id, nil
}

// identify returns the identity of a peer whose handshake verify passed.
func (t *clusterTLS) identify(p mux.Peer) (nodecert.Identity, error) {
	if !p.TLS() {
		return nodecert.Identity{}, fmt.Errorf("%w: %v has no verified certificate", ErrUnauthorized, p.Addr)
	}
	id, err := nodecert.Parse(p.Certificates[0], t.cfg.Cluster)
	if err != nil {
		return nodecert.Identity{}, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return id, nil
}

// Reload reads the certificate, key and CA again (from the files, or from
// Config) and puts them in force for new connections; connections already
// open keep theirs. On an error the previous material stays.
func (t *clusterTLS) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var m tlsMaterial
	var mtimes [3]time.Time
	if c := t.cfg.Config; c != nil {
		m.cert = &c.Certificates[0]
		m.roots = c.RootCAs
		if m.roots == nil {
			m.roots = c.ClientCAs
		}
	} else {
		for i, f := range []string{t.cfg.CertFile, t.cfg.KeyFile, t.cfg.CAFile} {
			fi, err := os.Stat(f)
			if err != nil {
				return fmt.Errorf("%w: TLS: %w", ErrConfig, err)
			}
			mtimes[i] = fi.ModTime()
		}
		cert, err := tls.LoadX509KeyPair(t.cfg.CertFile, t.cfg.KeyFile)
		if err != nil {
			return fmt.Errorf("%w: TLS: %w", ErrConfig, err)
		}
		ca, err := os.ReadFile(t.cfg.CAFile)
		if err != nil {
			return fmt.Errorf("%w: TLS: %w", ErrConfig, err)
		}
		m.roots = x509.NewCertPool()
		if !m.roots.AppendCertsFromPEM(ca) {
			return fmt.Errorf("%w: TLS: %s holds no PEM certificate", ErrConfig, t.cfg.CAFile)
		}
		m.cert = &cert
	}
	if err := t.checkOwn(&m); err != nil {
		return err
	}
	t.cur.Store(&m)
	t.mtimes = mtimes
	return nil
}

// checkOwn refuses material whose certificate is not this node's, or does
// not chain to its own CA (peers would refuse it).
func (t *clusterTLS) checkOwn(m *tlsMaterial) error {
	leaf, err := x509.ParseCertificate(m.cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("%w: TLS: %w", ErrConfig, err)
	}
	inter := x509.NewCertPool()
	for _, der := range m.cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("%w: TLS: this node's certificate does not chain to the CA: %w", ErrConfig, err)
	}
	id, err := nodecert.Parse(leaf, t.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("%w: TLS: this node's certificate: %w", ErrConfig, err)
	}
	if id.NodeID != t.self.NodeID {
		return fmt.Errorf("%w: TLS: this node's certificate names node %q, not %q", ErrConfig, id.NodeID, t.self.NodeID)
	}
	if id.Role == nodecert.Worker && !t.worker {
		return fmt.Errorf("%w: TLS: a worker certificate (%s) needs NonVoter", ErrConfig, id)
	}
	return nil
}

// changed reports whether a file's modification time moved since the last
// successful load.
func (t *clusterTLS) changed() bool {
	if t.cfg.Config != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, f := range []string{t.cfg.CertFile, t.cfg.KeyFile, t.cfg.CAFile} {
		if fi, err := os.Stat(f); err == nil && !fi.ModTime().Equal(t.mtimes[i]) {
			return true
		}
	}
	return false
}

// watch reloads changed files every ReloadInterval until closing.
func (t *clusterTLS) watch(closing <-chan struct{}) {
	every := t.cfg.ReloadInterval
	if every == 0 {
		every = 10 * time.Second
	}
	if every < 0 || t.cfg.Config != nil {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if !t.changed() {
				continue
			}
			if err := t.Reload(); err != nil {
				t.logger.Warn("raftlog: TLS files changed but did not load; keeping the previous certificate", "err", err)
			} else {
				t.logger.Info("raftlog: TLS certificate reloaded", "cert", t.cfg.CertFile)
			}
		case <-closing:
			return
		}
	}
}

// ReloadTLS reloads the certificate, key and CA now (Config.TLS); new
// connections use them, open ones keep theirs. On an error the previous
// material stays in force.
func (l *Log) ReloadTLS() error {
	if l.tls == nil {
		return fmt.Errorf("%w: TLS is not configured", ErrConfig)
	}
	return l.tls.Reload()
}

// ListenerTLS returns a server configuration for another listener of this
// node (the Kafka listener, an HTTP API): it presents this node's
// certificate and requires a client certificate of the cluster's CA that
// names an identity of the cluster (a node or a worker), both as this
// node's TLS has them now, so a reload (ReloadTLS, or the files changing)
// reaches that listener's new connections too. Clients may use TLS 1.2 or
// later. Nil if the node runs without TLS.
func (l *Log) ListenerTLS() *tls.Config {
	if l.tls == nil {
		return nil
	}
	c := l.tls.server.Clone()
	c.MinVersion = tls.VersionTLS12
	return c
}

// secure wraps the cluster listener and dialer in TLS when it is
// configured, and warns when a plaintext cluster port is reachable
// beyond loopback.
func (l *Log) secure(ln net.Listener, dial mux.Dialer) (net.Listener, mux.Dialer, error) {
	if l.cfg.TLS == nil {
		if !loopbackAddr(ln.Addr()) {
			l.cfg.Logger.Warn("raftlog: the cluster port listens beyond loopback WITHOUT TLS: anyone who can reach it can read and write the log; set TLS (see SECURITY.md)",
				"node", l.cfg.NodeID, "addr", ln.Addr().String())
		}
		return ln, dial, nil
	}
	t, err := newClusterTLS(&l.cfg, l.cfg.Logger.With("logger", "raftlog", "node", l.cfg.NodeID))
	if err != nil {
		return nil, nil, err
	}
	l.tls = t
	return mux.TLSListener(ln, t.server), mux.TLSDialer(dial, t.client), nil
}

// loopbackAddr reports whether a is a loopback IP address.
func loopbackAddr(a net.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		if a == nil {
			return false
		}
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return false
		}
		ip = net.ParseIP(host)
	}
	return ip != nil && ip.IsLoopback()
}

// guardedStream is a shard's raft stream layer that drops, at accept,
// connections from peers that may not send raft RPCs to the shard.
type guardedStream struct {
	raft.StreamLayer
	l     *Log
	shard Shard
	raft  atomic.Pointer[raft.Raft] // set once the shard's raft runs
}

func (g *guardedStream) Accept() (net.Conn, error) {
	for {
		c, err := g.StreamLayer.Accept()
		if err != nil {
			return c, err
		}
		if g.l.tls != nil {
			if err := g.admit(c); err != nil {
				g.l.logger.Warn("raftlog: raft connection refused", "shard", g.shard, "peer", c.RemoteAddr().String(), "err", err)
				c.Close()
				continue
			}
		}
		return &clusterCheckedConn{Conn: c, g: g}, nil
	}
}

// Every raft connection starts, after the mux's service byte, with a
// preamble: clusterPreambleMagic, then the dialing node's cluster ID (16
// bytes, zeros while it has none: a cluster forming, a wiped node
// rejoining). A node whose own cluster ID differs drops the connection
// before raft reads an RPC from it: a node of an old cluster, its peers'
// addresses now a restored cluster's, could otherwise win their votes or
// overwrite their logs. Certificates do not tell the two apart: a restored
// cluster may keep the old one's CA.
//
// The magic byte is not one of hashicorp/raft's RPC types (0 to 3), which
// open a connection of a node from before the preamble: such a connection
// passes unchecked, so a rolling upgrade keeps the old leader's
// replication to the upgraded followers (raft RPCs from an upgraded node
// to one not yet upgraded fail, so upgrade the leader last; Close hands
// its leadership to an upgraded follower).
const (
	clusterPreambleMagic = 0xC1
	clusterPreambleLen   = 1 + 16
)

// Dial connects to the shard's raft service at address and sends the
// preamble with this node's cluster ID.
func (g *guardedStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := g.StreamLayer.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	pre := clusterPreamble(g.l.ClusterID())
	if timeout > 0 {
		err = c.SetWriteDeadline(time.Now().Add(timeout))
	}
	if err == nil {
		_, err = c.Write(pre[:])
	}
	if err == nil {
		err = c.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// clusterPreamble is the preamble of a connection of cluster id, zeros
// for "" (or an ID that is not a UUID, which no node writes).
func clusterPreamble(id string) [clusterPreambleLen]byte {
	var pre [clusterPreambleLen]byte
	pre[0] = clusterPreambleMagic
	if u, err := uuid.Parse(id); err == nil {
		copy(pre[1:], u[:])
	}
	return pre
}

// clusterCheckedConn is an accepted raft connection whose first read
// consumes and checks the dialer's preamble: raft's transport reads each
// connection in a goroutine of its own, so a peer that sends nothing holds
// up no other connection. The cluster ID it compares with is read without
// a lock (state.Engine.ClusterID).
type clusterCheckedConn struct {
	net.Conn
	g       *guardedStream
	once    sync.Once
	err     error
	pending []byte // a legacy connection's first byte, raft's to read
}

func (c *clusterCheckedConn) Read(p []byte) (int, error) {
	c.once.Do(c.check)
	if c.err != nil {
		return 0, c.err
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *clusterCheckedConn) check() {
	var pre [clusterPreambleLen]byte
	if _, err := io.ReadFull(c.Conn, pre[:1]); err != nil {
		c.err = err
		return
	}
	if pre[0] != clusterPreambleMagic {
		c.pending = []byte{pre[0]} // a node from before the preamble
		return
	}
	if _, err := io.ReadFull(c.Conn, pre[1:]); err != nil {
		c.err = err
		return
	}
	theirs := uuid.UUID(pre[1:])
	ours := c.g.l.ClusterID()
	if theirs == (uuid.UUID{}) || ours == "" || theirs.String() == ours {
		return
	}
	c.err = fmt.Errorf("%w: a raft connection from a node of cluster %s, not this node's cluster %s",
		ErrConfig, theirs, ours)
	c.g.l.logger.Warn("raftlog: raft connection from another cluster refused", "shard", c.g.shard,
		"peer", c.RemoteAddr().String(), "peer_cluster", theirs.String(), "cluster", ours)
	c.Conn.Close()
}

// admit lets in raft streams from voters of the shard: raft RPCs come
// from leaders and candidates only. A node with no configuration yet (it
// is joining) admits any voter certificate of the cluster: its future
// leader is not known to it.
func (g *guardedStream) admit(c net.Conn) error {
	id, err := g.l.tls.identify(mux.PeerOf(c))
	if err != nil {
		return err
	}
	if id.Role != nodecert.Voter {
		return fmt.Errorf("%w: %s may not send raft RPCs", ErrUnauthorized, id)
	}
	r := g.raft.Load()
	if r == nil {
		return fmt.Errorf("%w: shard %d is not running yet", ErrUnauthorized, g.shard)
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return nil
	}
	for _, s := range servers {
		if string(s.ID) == id.NodeID {
			if s.Suffrage != raft.Voter {
				return fmt.Errorf("%w: %s is not a voter of shard %d", ErrUnauthorized, id, g.shard)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %s is not a member of shard %d", ErrUnauthorized, id, g.shard)
}

var _ raft.StreamLayer = (*guardedStream)(nil)
