package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/schema"
)

func TestSchemas(t *testing.T) {
	reg, err := schema.Open(context.Background(), eventstoretest.Single(t).Node(0))
	require.NoError(t, err)
	t.Cleanup(func() { reg.Close() })
	srv := httptest.NewServer(schema.Handler(reg))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	v1 := file("v1.json", `{"type":"object","properties":{"qty":{"type":"integer"}},"additionalProperties":false}`)
	v2 := file("v2.json", `{"type":"object","properties":{"qty":{"type":"integer"},"note":{"type":"string"}},"additionalProperties":false}`)
	bad := file("bad.json", `{"type":"object","properties":{"qty":{"type":"string"}},"additionalProperties":false}`)
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(append([]string{"schemas", args[0], "-url", srv.URL}, args[1:]...), &out, &errOut)
		return out.String(), err
	}

	out, err := cli("ls")
	require.NoError(t, err)
	require.Empty(t, out)
	out, err = cli("register", "OrderPlaced", v1)
	require.NoError(t, err)
	require.Regexp(t, `^OrderPlaced version 1 \(id \d+\)\n$`, out)

	out, err = cli("check", "OrderPlaced", v2)
	require.NoError(t, err)
	require.Equal(t, "compatible with OrderPlaced version latest\n", out)
	out, err = cli("check", "OrderPlaced", bad, "1")
	require.ErrorIs(t, err, errIncompatible)
	require.Contains(t, out, "incompatible with OrderPlaced version 1:\n  type_changed at #/properties/qty/type")

	_, err = cli("register", "OrderPlaced", bad)
	require.ErrorContains(t, err, "#/properties/qty/type")
	require.ErrorContains(t, err, "error_code 409")
	out, err = cli("register", "OrderPlaced", v2)
	require.NoError(t, err)
	require.Contains(t, out, "OrderPlaced version 2")

	out, err = cli("ls")
	require.NoError(t, err)
	require.Regexp(t, `^OrderPlaced\tversion 2\tid \d+\n$`, out)
	out, err = cli("show", "OrderPlaced", "1")
	require.NoError(t, err)
	require.Contains(t, out, "OrderPlaced version 1 (id ")
	require.Contains(t, out, `"qty": {`)

	_, err = cli("show", "Nope")
	require.ErrorContains(t, err, "error_code 40401")
	_, err = cli("register", "OrderPlaced")
	require.ErrorContains(t, err, "wrong number of arguments")
	_, err = cli("frobnicate")
	require.ErrorContains(t, err, "unknown subcommand")
}
