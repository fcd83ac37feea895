package faulttest

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echo serves an echo backend and returns its address.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dialAs connects to addr from node i's source IP.
func dialAs(t *testing.T, i int, addr string) net.Conn {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(SourceIP(i))}, Timeout: time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(c net.Conn, msg string, within time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(within))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

func TestProxyCutsAndHealsLinks(t *testing.T) {
	p, err := NewProxy(3)
	require.NoError(t, err)
	defer p.Close()
	p.SetBackend(1, echo(t))

	from0 := dialAs(t, 0, p.Addr(1))
	from2 := dialAs(t, 2, p.Addr(1))
	got, err := roundTrip(from0, "hello", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "hello", got)

	// Blackhole: bytes are held on the open connection, other links work.
	p.Set(0, 1, LinkBlackhole)
	_, err = roundTrip(from0, "held", 300*time.Millisecond)
	require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "got %v", err)
	got, err = roundTrip(from2, "other", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "other", got)
	// Healing delivers what was held, in order.
	p.Heal()
	buf := make([]byte, len("held"))
	from0.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadFull(from0, buf)
	require.NoError(t, err)
	require.Equal(t, "held", string(buf))
	got, err = roundTrip(from0, "again", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "again", got)

	// Drop: the open connection is closed and new ones are refused; the
	// link is symmetric, whichever end dials.
	p.Set(1, 0, LinkDrop)
	_, err = roundTrip(from0, "x", 5*time.Second)
	require.Error(t, err)
	require.Equal(t, LinkDrop, p.Mode(0, 1))
	fresh := dialAs(t, 0, p.Addr(1))
	_, err = roundTrip(fresh, "x", 5*time.Second)
	require.Error(t, err)
	p.Heal()
	fresh = dialAs(t, 0, p.Addr(1))
	got, err = roundTrip(fresh, "back", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "back", got)

	// A node that is down refuses connections.
	p.SetBackend(1, "")
	down := dialAs(t, 2, p.Addr(1))
	_, err = roundTrip(down, "x", 5*time.Second)
	require.Error(t, err)
}
