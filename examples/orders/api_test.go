package main

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The HTTP API's answers: created, idempotent retries, rule violations,
// preconditions, unknown orders, and bad input that appends nothing.
func TestAPI(t *testing.T) {
	addr, _, stop := startApp(t, filepath.Join(t.TempDir(), "data"))
	defer stop()
	base := "http://" + addr
	order := map[string]any{"customer": "ann", "items": []map[string]any{{"sku": "book", "qty": 2, "price_cents": 1250}}}
	post := func(path, key string, body any) (int, map[string]any) {
		var out map[string]any
		code, err := call("POST", base+path, key, body, &out)
		require.NoError(t, err)
		return code, out
	}

	code, first := post("/orders", "k1", order)
	require.Equal(t, http.StatusCreated, code)
	code, again := post("/orders", "k1", order)
	require.Equal(t, http.StatusCreated, code, "a retry with the same Idempotency-Key")
	require.Equal(t, first, again)

	withID := map[string]any{"id": "o-1", "customer": "bob", "items": []map[string]any{{"sku": "pen", "qty": 1, "price_cents": 300}}}
	code, _ = post("/orders", "", withID)
	require.Equal(t, http.StatusCreated, code)
	code, _ = post("/orders", "", withID)
	require.Equal(t, http.StatusConflict, code, "a client-chosen id that exists")

	code, _ = post("/orders/o-1/ship", "", nil)
	require.Equal(t, http.StatusConflict, code, "no shipping before payment")
	req, _ := http.NewRequest("POST", base+"/orders/o-1/pay", jsonBody(map[string]any{"amount_cents": 300}))
	req.Header.Set("If-Match", "7")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusPreconditionFailed, resp.StatusCode)
	code, out := post("/orders/o-1/pay", "", map[string]any{"amount_cents": 300})
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, float64(2), out["version"])
	code, _ = post("/orders/o-1/pay", "", map[string]any{"amount_cents": 300})
	require.Equal(t, http.StatusConflict, code, "no paying twice")
	code, _ = post("/orders/o-1/ship", "", nil)
	require.Equal(t, http.StatusOK, code)
	code, _ = post("/orders/o-1/cancel", "", nil)
	require.Equal(t, http.StatusConflict, code, "no cancelling after shipping")
	code, _ = post("/orders/nope/ship", "", nil)
	require.Equal(t, http.StatusNotFound, code)
	getCode, err := call("GET", base+"/orders/nope", "", nil, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, getCode)

	var before statusHeads
	_, err = call("GET", base+"/status", "", nil, &before)
	require.NoError(t, err)
	for name, body := range map[string]string{
		"malformed":      `{"customer":`,
		"unknown field":  `{"customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}],"coupon":"x"}`,
		"negative qty":   `{"customer":"a","items":[{"sku":"a","qty":-1,"price_cents":1}]}`,
		"negative price": `{"customer":"a","items":[{"sku":"a","qty":1,"price_cents":-5}]}`,
		"empty items":    `{"customer":"a","items":[]}`,
		"no customer":    `{"items":[{"sku":"a","qty":1,"price_cents":1}]}`,
		"trailing data":  `{"customer":"a","items":[{"sku":"a","qty":1,"price_cents":1}]} {}`,
	} {
		resp, err := http.Post(base+"/orders", "application/json", stringsReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, name)
	}
	code, _ = post("/orders/o-1/pay", "", map[string]any{"amount_cents": -1})
	require.Equal(t, http.StatusBadRequest, code)
	var after statusHeads
	_, err = call("GET", base+"/status", "", nil, &after)
	require.NoError(t, err)
	require.Equal(t, before.Heads, after.Heads, "bad input appended nothing")
}

type statusHeads struct {
	Heads map[string]uint64 `json:"partition_heads"`
}
