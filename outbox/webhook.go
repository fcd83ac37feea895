package outbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// StatusError is a webhook response outside 2xx; the relay retries it.
type StatusError struct {
	StatusCode int
	// Body is the start of the response body.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("outbox: webhook answered %d: %q", e.StatusCode, e.Body)
}

// Webhook POSTs each message to a URL. The body is the payload; headers:
// Idempotency-Key (the message ID: the receiver must deduplicate by it,
// since a message may come more than once), X-Message-Type, X-Message-Key,
// X-Message-Attempt, Content-Type (application/json unless the message's
// headers set it) and the message's own headers. Any 2xx answer is
// success; anything else, a timeout or a network error is retried by the
// relay.
type Webhook struct {
	url     string
	client  *http.Client
	timeout time.Duration
}

var _ Publisher = (*Webhook)(nil)

// WebhookOption adjusts a Webhook.
type WebhookOption func(*Webhook)

// WithHTTPClient sets the client [a client of its own].
func WithHTTPClient(c *http.Client) WebhookOption { return func(w *Webhook) { w.client = c } }

// WithTimeout bounds one request, response body included [10s].
func WithTimeout(d time.Duration) WebhookOption { return func(w *Webhook) { w.timeout = d } }

// NewWebhook returns a publisher posting to rawURL. Errors: ErrBadURL,
// ErrBadConfig for a non-positive timeout.
func NewWebhook(rawURL string, opts ...WebhookOption) (*Webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q", ErrBadURL, rawURL)
	}
	w := &Webhook{url: u.String(), client: &http.Client{}, timeout: 10 * time.Second}
	for _, o := range opts {
		o(w)
	}
	if w.timeout <= 0 || w.client == nil {
		return nil, fmt.Errorf("%w: webhook timeout %v must be positive and the client set", ErrBadConfig, w.timeout)
	}
	return w, nil
}

// Publish posts m and waits for a 2xx answer.
func (w *Webhook) Publish(ctx context.Context, m Message) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(m.Payload))
	if err != nil {
		return Permanent(fmt.Errorf("outbox: webhook request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range m.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Idempotency-Key", m.ID.String())
	req.Header.Set("X-Message-Type", m.Type)
	req.Header.Set("X-Message-Key", m.Key)
	req.Header.Set("X-Message-Attempt", strconv.Itoa(m.Attempt))
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("outbox: webhook %s: %w", m.ID, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{StatusCode: resp.StatusCode, Body: string(body)}
	}
	return nil
}
