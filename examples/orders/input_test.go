package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strings"
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
