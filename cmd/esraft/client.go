package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/esraft/esraft/admin"
)

// Exit codes of the admin verbs.
const (
	exitFailed      = 1 // the server refused or failed the request
	exitUsage       = 2 // bad flags or arguments
	exitUnreachable = 3 // no answer from --addr
	exitAuth        = 4 // not authenticated (token or certificate)
	exitNotFound    = 5 // the node, stream, group, projection... does not exist
)

// exitError carries the exit code of an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

// client is the connection to a node's admin API, from the flags every
// admin verb takes.
type client struct {
	addr, token       string
	caFile, cert, key string
	json              bool
	output            string
	timeout           time.Duration
	http              *http.Client
	stdout, stderr    io.Writer
	// terminal is where a verb that changes state asks for confirmation
	// (the standard input when it is a terminal); nil: there is none.
	terminal io.Reader
}

// confirm asks question on the terminal before verb changes state, unless
// yes (--yes). Without a terminal it refuses, as it cannot ask; an answer
// other than y or yes stops the verb before it sends anything.
func (c *client) confirm(verb string, yes bool, question string) error {
	if yes {
		return nil
	}
	if c.terminal == nil {
		return usageErr("%s: no terminal to confirm on: give --yes to proceed", verb)
	}
	fmt.Fprintf(c.stderr, "%s [y/N] ", question)
	answer, err := bufio.NewReader(io.LimitReader(c.terminal, 1<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return &exitError{exitFailed, fmt.Errorf("%s: reading the answer: %w", verb, err)}
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return &exitError{exitFailed, fmt.Errorf("%s: not confirmed; nothing was changed", verb)}
}

// stdinTerminal is the standard input if it is a terminal, else nil (a
// pipe, a file, /dev/null: scripts, which must say --yes).
func stdinTerminal() io.Reader {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil
	}
	return os.Stdin
}

// parse parses args for verb (usage: its synopsis and description) with
// the connection flags and those setup adds; flags may come before,
// between or after the positional arguments, which it returns. want is
// the number of positional arguments (-1: any).
func (c *client) parse(verb, usage string, args []string, want int, setup func(fs *flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: esraft %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	c.flags(fs)
	if setup != nil {
		setup(fs)
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &exitError{exitUsage, err}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if want >= 0 && len(pos) != want {
		fs.Usage()
		return nil, usageErr("%s: %d argument(s) expected, got %d", verb, want, len(pos))
	}
	return pos, c.setup()
}

// flags adds the connection and output flags to fs.
func (c *client) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", envOr("ESRAFT_ADDR", "http://127.0.0.1:8080"), "the node's HTTP address, with the admin API ($ESRAFT_ADDR)")
	fs.StringVar(&c.token, "token", "", "admin bearer token (default $ESRAFT_TOKEN)")
	fs.StringVar(&c.caFile, "cacert", "", "CA certificate(s), PEM, to verify an https --addr")
	fs.StringVar(&c.cert, "cert", "", "client certificate, PEM (an identity of the cluster, see SECURITY.md)")
	fs.StringVar(&c.key, "key", "", "the client certificate's private key, PEM")
	fs.BoolVar(&c.json, "json", false, "print JSON (the API's answer) instead of a table")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "bound on each request")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// setup checks the flags and builds the HTTP client.
func (c *client) setup() error {
	if c.token == "" {
		c.token = os.Getenv("ESRAFT_TOKEN")
	}
	switch c.output {
	case "json":
		c.json = true
	case "table":
	default:
		return usageErr("-o %q: use table or json", c.output)
	}
	if !strings.Contains(c.addr, "://") {
		c.addr = "http://" + c.addr
	}
	u, err := url.Parse(c.addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr("--addr %q is not an http(s)://host:port address", c.addr)
	}
	c.addr = strings.TrimRight(c.addr, "/")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.caFile != "" || c.cert != "" || c.key != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.caFile != "" {
			pem, err := os.ReadFile(c.caFile)
			if err != nil {
				return usageErr("--cacert: %v", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return usageErr("--cacert %s holds no PEM certificate", c.caFile)
			}
		}
		if (c.cert == "") != (c.key == "") {
			return usageErr("--cert and --key go together")
		}
		if c.cert != "" {
			kp, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				return usageErr("--cert/--key: %v", err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		tr.TLSClientConfig = tc
	}
	c.http = &http.Client{Transport: tr}
	return nil
}

// do sends a request to path and decodes a 2xx JSON answer into out;
// other answers become errors with the server's message and an exit code
// that says what happened.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &exitError{exitUnreachable, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)}
	}
	if resp.StatusCode >= 300 {
		return apiError(resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return &exitError{exitFailed, fmt.Errorf("%s %s: the answer is not the expected JSON: %w", method, path, err)}
		}
	}
	return nil
}

// send makes a request; the caller closes the body. A body that is an
// io.Reader is sent as it is (JSON lines), any other as JSON.
func (c *client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	contentType := "application/json"
	if r, ok := body.(io.Reader); ok {
		rd, contentType = r, "application/x-ndjson"
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.addr+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &exitError{exitUnreachable, fmt.Errorf("cannot reach %s: %w", c.addr, err)}
	}
	return resp, nil
}

// apiError turns an error answer into an error with an exit code.
func apiError(status int, data []byte) error {
	var e admin.Error
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	code := exitFailed
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		code = exitAuth
		if !strings.Contains(msg, "token") && !strings.Contains(msg, "certificate") {
			msg += " (give --token or $ESRAFT_TOKEN, or --cert/--key)"
		}
	case http.StatusNotFound:
		code = exitNotFound
	}
	return &exitError{code, fmt.Errorf("%s (HTTP %d)", msg, status)}
}

// ctx is a request's context, bounded by --timeout.
func (c *client) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// get fetches path into out, bounded by --timeout.
func (c *client) get(path string, out any) error {
	ctx, cancel := c.ctx()
	defer cancel()
	return c.do(ctx, "GET", path, nil, out)
}

// post sends body to path and decodes the answer into out.
func (c *client) post(method, path string, body, out any) error {
	ctx, cancel := c.ctx()
	defer cancel()
	return c.do(ctx, method, path, body, out)
}

// print writes v as indented JSON (with --json) or calls table.
func (c *client) print(v any, table func(t *tabwriter.Writer)) error {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// row writes one tab-separated table row.
func row(t io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(t, "\t")
		}
		fmt.Fprint(t, c)
	}
	fmt.Fprintln(t)
}
