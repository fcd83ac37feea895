package main

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A client that sends its request headers a byte at a time is cut off
// once ReadHeaderTimeout has passed, not served nor waited for.
func TestSlowHeadersCutOff(t *testing.T) {
	const readHeader = 500 * time.Millisecond
	addr, _, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data"), timeouts: httpTimeouts{ReadHeader: readHeader}})
	defer stop()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()

	// The reader sees the server close the connection (EOF or a reset).
	closed := make(chan time.Time, 1)
	go func() {
		io.Copy(io.Discard, conn)
		closed <- time.Now()
	}()
	headers := "GET /status HTTP/1.1\r\nHost: orders\r\nUser-Agent: one-byte-at-a-time\r\nX-Padding: " + strings.Repeat("p", 120) + "\r\n\r\n"
	const every = 50 * time.Millisecond // the full headers would take 10 s
	begin := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var at time.Time
	sent := 0
	for at.IsZero() {
		select {
		case at = <-closed:
		case <-tick.C:
			require.Less(t, sent, len(headers), "sent the whole header without being cut off")
			if _, err := conn.Write([]byte{headers[sent]}); err == nil {
				sent++
			}
		}
	}
	took := at.Sub(begin)
	t.Logf("cut off after %v, %d of %d header bytes sent", took, sent, len(headers))
	require.GreaterOrEqual(t, took, readHeader-every, "cut off by the timeout, not at once")
	require.Less(t, took, readHeader+2*time.Second, "cut off within ReadHeaderTimeout (and some slack for a loaded machine)")
	require.Less(t, sent, len(headers))
}

// Zero timeouts take the defaults; every one of the four is set.
func TestHTTPTimeoutDefaults(t *testing.T) {
	require.Equal(t, defaultHTTPTimeouts, httpTimeouts{}.withDefaults())
	got := httpTimeouts{ReadHeader: time.Second}.withDefaults()
	require.Equal(t, time.Second, got.ReadHeader)
	require.Equal(t, defaultHTTPTimeouts.Idle, got.Idle)
	for _, d := range []time.Duration{got.ReadHeader, got.Read, got.Write, got.Idle} {
		require.Positive(t, d)
	}
}
