package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// send makes a request with a raw body and headers and returns the status,
// the decoded JSON answer and the response headers.
func send(t *testing.T, method, url, body string, header map[string]string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out), "a JSON object: %q", data)
	return resp.StatusCode, out, resp.Header
}

func heads(t *testing.T, base string) map[string]uint64 {
	t.Helper()
	var st statusHeads
	code, err := call("GET", base+"/status", "", nil, &st)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	return st.Heads
}

// Amounts that do not fit an int64, quantities and prices that are not
// positive, and IDs outside the documented set are 400s that append
// nothing; the largest total that fits is accepted.
func TestOrderInputChecked(t *testing.T) {
	addr, _, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data")})
	defer stop()
	base := "http://" + addr
	before := heads(t, base)
	for _, c := range []struct{ name, body, errHas string }{
		{"qty × price overflows", `{"id":"o-1","customer":"a","items":[{"sku":"a","qty":2,"price_cents":4611686018427387904}]}`, "items[0] is too large"},
		{"the sum overflows", `{"id":"o-1","customer":"a","items":[{"sku":"a","qty":1,"price_cents":9223372036854775807},{"sku":"b","qty":1,"price_cents":1}]}`, "items total too large"},
		{"zero price", `{"id":"o-1","customer":"a","items":[{"sku":"a","qty":1,"price_cents":0}]}`, "items[0].price_cents must be positive"},
		{"zero qty", `{"id":"o-1","customer":"a","items":[{"sku":"a","qty":0,"price_cents":1}]}`, "items[0].qty must be positive"},
		{"qty past int64", `{"id":"o-1","customer":"a","items":[{"sku":"a","qty":9223372036854775808,"price_cents":1}]}`, "malformed JSON"},
		{"trailing brace", `{"id":"o-1","customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]}}`, "data after the object"},
		{"trailing text", `{"id":"o-1","customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]}x`, "data after the object"},
		{"id with a slash", `{"id":"a/b","customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]}`, "id must be 1 to 128 characters"},
		{"id with a space", `{"id":"a b","customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]}`, "id must be"},
		{"id of dots", `{"id":"..","customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]}`, "id must be"},
		{"id not ASCII", `{"id":"café","customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]}`, "id must be"},
		{"id too long", `{"id":"` + strings.Repeat("a", 129) + `","customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]}`, "id must be"},
	} {
		code, out, _ := send(t, "POST", base+"/orders", c.body, nil)
		require.Equal(t, http.StatusBadRequest, code, c.name)
		require.Contains(t, out["error"], c.errHas, c.name)
	}
	for _, path := range []string{"/orders/a%20b", "/views/orders/a%20b", "/orders/" + strings.Repeat("x", 129)} {
		code, out, _ := send(t, "GET", base+path, "", nil)
		require.Equal(t, http.StatusBadRequest, code, path)
		require.Contains(t, out["error"], "id must be", path)
	}
	code, _, _ := send(t, "POST", base+"/orders/a%20b/pay", `{"amount_cents":1}`, nil)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, before, heads(t, base), "refused input appended nothing")
	code, _, _ = send(t, "GET", base+"/orders/o-1", "", nil)
	require.Equal(t, http.StatusNotFound, code, "no order o-1 was stored")

	code, _, _ = send(t, "POST", base+"/orders",
		fmt.Sprintf(`{"id":"Big_1.x","customer":"a","items":[{"sku":"a","qty":1,"price_cents":%d}]}`, int64(math.MaxInt64)), nil)
	require.Equal(t, http.StatusCreated, code, "the largest total that fits, and an ID using each allowed kind of character")
	code, out, _ := send(t, "GET", base+"/orders/Big_1.x", "", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, float64(math.MaxInt64), out["total_cents"])
}

// An Idempotency-Key names one request: sent again with the same body
// (however formatted) it gets the first answer; with a different body it
// is a 422 and nothing is created.
func TestIdempotencyKeyReuse(t *testing.T) {
	addr, _, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data")})
	defer stop()
	base := "http://" + addr
	key := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }

	first := `{"customer":"ann","items":[{"sku":"book","qty":2,"price_cents":1250}]}`
	code, created, _ := send(t, "POST", base+"/orders", first, key("k1"))
	require.Equal(t, http.StatusCreated, code)
	reformatted := "{ \"items\": [ {\"price_cents\": 1250, \"sku\": \"book\", \"qty\": 2} ],\n \"customer\": \"ann\" }"
	code, again, _ := send(t, "POST", base+"/orders", reformatted, key("k1"))
	require.Equal(t, http.StatusCreated, code)
	require.Equal(t, created, again, "same key, same request: same id and version")

	before := heads(t, base)
	code, out, _ := send(t, "POST", base+"/orders", `{"customer":"ann","items":[{"sku":"book","qty":3,"price_cents":1250}]}`, key("k1"))
	require.Equal(t, http.StatusUnprocessableEntity, code, "same key, different body")
	require.Contains(t, out["error"], "Idempotency-Key was already used with a different request body")
	require.Equal(t, before, heads(t, base), "a refused reuse appended nothing")

	// The body's id names the order: a key reused for another id is refused
	// too, and that order is not created.
	code, _, _ = send(t, "POST", base+"/orders", `{"id":"o-x","customer":"bob","items":[{"sku":"pen","qty":1,"price_cents":300}]}`, key("k2"))
	require.Equal(t, http.StatusCreated, code)
	before = heads(t, base)
	code, _, _ = send(t, "POST", base+"/orders", `{"id":"o-y","customer":"bob","items":[{"sku":"pen","qty":1,"price_cents":300}]}`, key("k2"))
	require.Equal(t, http.StatusUnprocessableEntity, code)
	code, _, _ = send(t, "GET", base+"/orders/o-y", "", nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, before, heads(t, base), "a refused reuse appended nothing")

	code, out, _ = send(t, "POST", base+"/orders", first, key(strings.Repeat("k", maxIdempotencyKeyLen+1)))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, out["error"], "Idempotency-Key must be at most 255 characters")
}

// A 50 MB body is refused with 413 after the first MiB: the server
// answers while the client is still sending, then closes the connection
// rather than read the rest.
func TestOversizedBody(t *testing.T) {
	addr, _, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data")})
	defer stop()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	const size = 50 << 20
	_, err = fmt.Fprintf(conn, "POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", size)
	require.NoError(t, err)
	var sent atomic.Int64
	writer := make(chan error, 1)
	go func() {
		chunk := []byte(strings.Repeat(" ", 64<<10)) // JSON whitespace
		for sent.Load() < size {
			n, err := conn.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				writer <- err
				return
			}
		}
		writer <- nil
	}()

	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	sentAtAnswer := sent.Load()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "%s", body)
	require.JSONEq(t, `{"error":"the request body is over the limit of 1048576 bytes"}`, string(body))
	require.Less(t, sentAtAnswer, int64(size), "answered before the client sent the whole body")

	select {
	case err := <-writer:
		require.Error(t, err, "the server closed the connection instead of reading the body to its end")
	case <-time.After(20 * time.Second):
		t.Fatal("the client is still sending 20 s after the answer: the server reads on")
	}
	require.Less(t, sent.Load(), int64(size))
	t.Logf("sent %d bytes of %d when answered, %d when the server cut the connection", sentAtAnswer, size, sent.Load())
}
