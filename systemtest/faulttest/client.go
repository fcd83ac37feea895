package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/esraft/esraft/systemtest/faulttest/wire"
)

// client calls the nodes' HTTP APIs.
type client struct {
	hc *http.Client
}

func newClient() *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	return &client{hc: &http.Client{Transport: tr}}
}

// errRefused: the node's API refused the connection, so the request was
// never received.
var errRefused = errors.New("faulttest: connection refused")

func (c *client) do(ctx context.Context, method, addr, path string, body, out any) error {
	if addr == "" {
		return errRefused
	}
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return errRefused
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("faulttest: %s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *client) append(ctx context.Context, addr string, req wire.AppendRequest) (wire.AppendResponse, error) {
	var out wire.AppendResponse
	err := c.do(ctx, http.MethodPost, addr, "/append", req, &out)
	return out, err
}

func (c *client) read(ctx context.Context, addr string, p int, from uint64, limit int) (wire.ReadResponse, error) {
	var out wire.ReadResponse
	err := c.do(ctx, http.MethodGet, addr, fmt.Sprintf("/read?p=%d&from=%d&limit=%d", p, from, limit), nil, &out)
	if err == nil && out.Error != "" {
		err = errors.New(out.Error)
	}
	return out, err
}

func (c *client) stream(ctx context.Context, addr, stream string, from uint64, limit int) (wire.ReadResponse, error) {
	var out wire.ReadResponse
	err := c.do(ctx, http.MethodGet, addr, fmt.Sprintf("/stream?s=%s&from=%d&limit=%d", url.QueryEscape(stream), from, limit), nil, &out)
	if err == nil && out.Error != "" {
		err = errors.New(out.Error)
	}
	return out, err
}

// head reads a stream's version on a node, after a read barrier if
// barrier is set.
func (c *client) head(ctx context.Context, addr, stream string, barrier bool) (wire.HeadResponse, error) {
	var out wire.HeadResponse
	b := 0
	if barrier {
		b = 1
	}
	err := c.do(ctx, http.MethodGet, addr, fmt.Sprintf("/head?s=%s&barrier=%d", url.QueryEscape(stream), b), nil, &out)
	if err == nil && out.Error != "" {
		err = errors.New(out.Error)
	}
	return out, err
}

func (c *client) digest(ctx context.Context, addr string, p int, upto uint64) (wire.DigestResponse, error) {
	var out wire.DigestResponse
	err := c.do(ctx, http.MethodGet, addr, fmt.Sprintf("/digest?p=%d&upto=%d", p, upto), nil, &out)
	if err == nil && out.Error != "" {
		err = errors.New(out.Error)
	}
	return out, err
}

func (c *client) status(ctx context.Context, addr string) (wire.StatusResponse, error) {
	var out wire.StatusResponse
	err := c.do(ctx, http.MethodGet, addr, "/status", nil, &out)
	return out, err
}

func (c *client) group(ctx context.Context, addr string) (wire.GroupResponse, error) {
	var out wire.GroupResponse
	err := c.do(ctx, http.MethodGet, addr, "/group", nil, &out)
	return out, err
}
