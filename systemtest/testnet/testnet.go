// Package testnet is a fault-injecting network for in-process cluster
// tests: every node dials through Network.Dialer, so the test can cut the
// links between chosen nodes in both directions (refusing new connections
// and closing live ones) and heal them again.
package testnet

import (
	"context"
	"errors"
	"net"
	"sync"
)

// ErrCut is returned when dialing across a cut link.
var ErrCut = errors.New("testnet: link cut")

// Network tracks links between node addresses.
type Network struct {
	mu    sync.Mutex
	cut   map[[2]string]bool
	conns map[*conn]struct{}
}

// New returns a network with every link up.
func New() *Network {
	return &Network{cut: map[[2]string]bool{}, conns: map[*conn]struct{}{}}
}

// Dialer returns the dial function for the node whose address is from.
func (n *Network) Dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if n.isCut(from, addr) {
			return nil, ErrCut
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		wc := &conn{Conn: c, from: from, to: addr, n: n}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.cut[[2]string{from, addr}] {
			c.Close()
			return nil, ErrCut
		}
		n.conns[wc] = struct{}{}
		return wc, nil
	}
}

func (n *Network) isCut(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[[2]string{a, b}]
}

// Cut cuts every link between a node of side a and a node of side b, in
// both directions, and closes the connections already open across them.
func (n *Network) Cut(a, b []string) {
	n.mu.Lock()
	var doomed []*conn
	for _, x := range a {
		for _, y := range b {
			n.cut[[2]string{x, y}] = true
			n.cut[[2]string{y, x}] = true
		}
	}
	for c := range n.conns {
		if n.cut[[2]string{c.from, c.to}] {
			doomed = append(doomed, c)
		}
	}
	n.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

// Isolate cuts node from every node in others.
func (n *Network) Isolate(node string, others []string) {
	n.Cut([]string{node}, others)
}

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	n.cut = map[[2]string]bool{}
	n.mu.Unlock()
}

type conn struct {
	net.Conn
	from, to string
	n        *Network
	once     sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.n.mu.Lock()
		delete(c.n.conns, c)
		c.n.mu.Unlock()
	})
	return c.Conn.Close()
}
