package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestQuickstart runs the program and checks what it prints: the
// aggregate's state and the view the projection built from its events.
func TestQuickstart(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }()
	main()
	require.NoError(t, w.Close())
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "aggregate: 2 items at version 2; view: 2 items\n", string(out))
}

// TestReadmeShowsThisProgram keeps the README's first program true: its Go
// block under "Your first program" is this file, byte for byte.
func TestReadmeShowsThisProgram(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	_, after, ok := bytes.Cut(readme, []byte("## Your first program"))
	require.True(t, ok, "README.md has no \"## Your first program\" section")
	_, block, ok := bytes.Cut(after, []byte("```go\n"))
	require.True(t, ok, "the section has no Go block")
	block, _, ok = bytes.Cut(block, []byte("```\n"))
	require.True(t, ok, "the Go block is not closed")
	require.Equal(t, strings.TrimSpace(string(src)), strings.TrimSpace(string(block)),
		"README.md's first program differs from examples/quickstart/main.go: copy the file into the README")
}
