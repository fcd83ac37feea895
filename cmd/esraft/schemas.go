package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const schemasUsage = `usage: esraft schemas <ls|show|register|check> [flags] [arguments]

Talks to a schema registry's Confluent-compatible API (package schema's
Handler; the orders example serves it under /registry):

  esraft schemas ls                          subjects and their latest version
  esraft schemas show SUBJECT [VERSION]      a version's schema (default: latest)
  esraft schemas register SUBJECT FILE       register FILE's JSON Schema under SUBJECT
  esraft schemas check SUBJECT FILE [VERSION]
                                             is FILE compatible with a version (default:
                                             latest)? exit status 1 if not

Registering needs the service's admin token: -token, or ESRAFT_ADMIN_TOKEN.

Flags:
`

// schemaClient calls the registry API at base.
type schemaClient struct {
	base  string
	token string
	http  *http.Client
}

// registryError is the registry's error body.
type registryError struct {
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

// call sends body (nil: none) as JSON and decodes the answer into out.
func (c *schemaClient) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e registryError
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			return fmt.Errorf("%s (error_code %d)", e.Message, e.Code)
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: unexpected answer %q: %w", method, path, data, err)
	}
	return nil
}

// errIncompatible makes check exit with status 1 after printing why.
var errIncompatible = errors.New("schemas: incompatible")

type schemaVersion struct {
	Subject string `json:"subject"`
	ID      int    `json:"id"`
	Version int    `json:"version"`
	Schema  string `json:"schema"`
}

func schemas(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("schemas", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, schemasUsage)
		fs.PrintDefaults()
	}
	base := fs.String("url", "http://127.0.0.1:8080/registry", "the registry API's base URL")
	token := fs.String("token", os.Getenv("ESRAFT_ADMIN_TOKEN"), "admin token for register (default $ESRAFT_ADMIN_TOKEN)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long one call may take")
	if len(args) == 0 {
		fs.Usage()
		return errors.New("schemas: no subcommand")
	}
	sub, rest := args[0], args[1:]
	if err := fs.Parse(rest); err != nil {
		return err
	}
	c := &schemaClient{base: strings.TrimSuffix(*base, "/"), token: *token, http: &http.Client{Timeout: *timeout}}
	argv := fs.Args()
	need := func(min, max int) error {
		if len(argv) < min || len(argv) > max {
			fs.Usage()
			return fmt.Errorf("schemas %s: wrong number of arguments", sub)
		}
		return nil
	}
	version := func(i int) string {
		if len(argv) > i {
			return argv[i]
		}
		return "latest"
	}
	subject := func() string { return url.PathEscape(argv[0]) }
	switch sub {
	case "ls":
		if err := need(0, 0); err != nil {
			return err
		}
		var subjects []string
		if err := c.call("GET", "/subjects", nil, &subjects); err != nil {
			return fmt.Errorf("schemas ls: %w", err)
		}
		for _, s := range subjects {
			var v schemaVersion
			if err := c.call("GET", "/subjects/"+url.PathEscape(s)+"/versions/latest", nil, &v); err != nil {
				return fmt.Errorf("schemas ls: %w", err)
			}
			fmt.Fprintf(stdout, "%s\tversion %d\tid %d\n", s, v.Version, v.ID)
		}
		return nil
	case "show":
		if err := need(1, 2); err != nil {
			return err
		}
		var v schemaVersion
		if err := c.call("GET", "/subjects/"+subject()+"/versions/"+url.PathEscape(version(1)), nil, &v); err != nil {
			return fmt.Errorf("schemas show: %w", err)
		}
		var pretty bytes.Buffer
		if json.Indent(&pretty, []byte(v.Schema), "", "  ") != nil {
			pretty.Reset()
			pretty.WriteString(v.Schema)
		}
		fmt.Fprintf(stdout, "%s version %d (id %d)\n%s\n", v.Subject, v.Version, v.ID, pretty.String())
		return nil
	case "register", "check":
		if sub == "register" {
			if err := need(2, 2); err != nil {
				return err
			}
		} else if err := need(2, 3); err != nil {
			return err
		}
		text, err := os.ReadFile(argv[1])
		if err != nil {
			return fmt.Errorf("schemas %s: %w", sub, err)
		}
		body := map[string]string{"schema": string(text), "schemaType": "JSON"}
		if sub == "check" {
			var res struct {
				IsCompatible bool     `json:"is_compatible"`
				Messages     []string `json:"messages"`
			}
			if err := c.call("POST", "/compatibility/subjects/"+subject()+"/versions/"+url.PathEscape(version(2))+"?verbose=true", body, &res); err != nil {
				return fmt.Errorf("schemas check: %w", err)
			}
			if res.IsCompatible {
				fmt.Fprintf(stdout, "compatible with %s version %s\n", argv[0], version(2))
				return nil
			}
			fmt.Fprintf(stdout, "incompatible with %s version %s:\n", argv[0], version(2))
			for _, m := range res.Messages {
				fmt.Fprintf(stdout, "  %s\n", m)
			}
			return errIncompatible
		}
		if err := c.call("POST", "/subjects/"+subject()+"/versions", body, nil); err != nil {
			return fmt.Errorf("schemas register: %w", err)
		}
		var v schemaVersion
		if err := c.call("POST", "/subjects/"+subject(), body, &v); err != nil {
			return fmt.Errorf("schemas register: registered, but looking it up failed: %w", err)
		}
		fmt.Fprintf(stdout, "%s version %d (id %d)\n", v.Subject, v.Version, v.ID)
		return nil
	}
	fs.Usage()
	return fmt.Errorf("schemas: unknown subcommand %q", sub)
}
