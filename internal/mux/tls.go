package mux

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
)

// TLS: the mux secures every service at once. TLSListener wraps the
// accepted connections (the handshake runs when the header byte is read,
// under the same deadline, so a silent client never holds the accept loop
// and a plaintext one fails the handshake), and TLSDialer wraps the
// dialer (the handshake completes before the header byte is written).
// The header byte travels inside TLS.

// TLSListener returns ln whose accepted connections are TLS servers with
// config.
func TLSListener(ln net.Listener, config *tls.Config) net.Listener {
	return tls.NewListener(ln, config)
}

// TLSDialer returns a Dialer that dials with dial (nil: a net.Dialer) and
// completes a TLS client handshake with config before returning.
func TLSDialer(dial Dialer, config *tls.Config) Dialer {
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		raw, err := dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, config)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("mux: tls handshake with %s: %w", addr, err)
		}
		return c, nil
	}
}

// Peer is the remote end of a connection a service accepted.
type Peer struct {
	Addr net.Addr
	// Certificates is the chain the peer presented in a completed TLS
	// handshake, leaf first; nil without TLS. It was verified by the TLS
	// configuration's own checks.
	Certificates []*x509.Certificate
}

// TLS reports whether the peer came over TLS with a certificate.
func (p Peer) TLS() bool { return len(p.Certificates) > 0 }

// PeerOf describes conn's remote end. A TLS connection whose handshake has
// not completed has no certificates.
func PeerOf(conn net.Conn) Peer {
	p := Peer{Addr: conn.RemoteAddr()}
	for conn != nil {
		if tc, ok := conn.(*tls.Conn); ok {
			if cs := tc.ConnectionState(); cs.HandshakeComplete {
				p.Certificates = cs.PeerCertificates
			}
			break
		}
		// The Mux wraps what it accepts (countedConn): look inside.
		w, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		conn = w.NetConn()
	}
	return p
}

type peerKey struct{}

// withPeer is the context of the requests arriving on conn.
func withPeer(ctx context.Context, conn net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, PeerOf(conn))
}

// PeerFromContext returns the peer whose request a Handler is serving.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}
