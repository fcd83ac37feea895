package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/esraft/esraft/eventstore"
)

// Idempotency keys. The first POST /orders with an Idempotency-Key claims
// the key: it appends one IdempotencyKeyClaimed event to the key's own
// stream, "idempotency-<UUID of the key>", naming the order the key
// creates and a digest of the request. A later request with the key reads
// the claim: the same request is answered with the order's first result,
// a different one is refused with 422 (it is not a retry, and answering it
// with the earlier order would hide that). The claim is in the log, so a
// retry through any node finds it.
//
// The digest is the SHA-256 of the decoded request re-encoded as JSON:
// whitespace and field order do not make two requests different.
//
// Orders created with a key before claims existed have none: the first
// retry claims the key for the same order ID (the key's UUID, or the body's
// id), and Create then finds the order with the key as its correlation ID.

var idempotencyNamespace = uuid.MustParse("6f1c9a52-4d0e-4b8e-9d33-0c6c0f0a8d11")

// maxIdempotencyKeyLen bounds the Idempotency-Key header.
const maxIdempotencyKeyLen = 255

// IdempotencyKeyClaimed is the one event of a key's stream.
type IdempotencyKeyClaimed struct {
	OrderID       string `json:"order_id"`
	RequestSHA256 string `json:"request_sha256"`
}

func requestDigest(req placeRequest) string {
	b, _ := json.Marshal(req) // a struct of strings and integers: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// claimIdempotencyKey returns the order ID key stands for, claiming it
// for this request if no request has yet: the body's id names the order,
// or else the key does. A claim by a different request is a 422.
func (a *app) claimIdempotencyKey(ctx context.Context, key string, req placeRequest) (string, error) {
	stream := "idempotency-" + uuid.NewSHA1(idempotencyNamespace, []byte(key)).String()
	digest := requestDigest(req)
	claim, err := a.readClaim(ctx, stream)
	if err != nil {
		return "", err
	}
	if claim == nil {
		orderID := req.ID
		if orderID == "" {
			orderID = uuid.NewSHA1(idempotencyNamespace, []byte(key)).String()
		}
		data, _ := json.Marshal(IdempotencyKeyClaimed{OrderID: orderID, RequestSHA256: digest})
		_, err := a.store.Append(ctx, stream, eventstore.NoStream, []eventstore.EventData{{
			Type: "IdempotencyKeyClaimed", Data: data,
			Metadata: eventstore.Metadata{CorrelationID: "idem:" + key},
		}})
		// A concurrent request with the key may have claimed it first:
		// the claim read back decides either way.
		if err != nil && !errors.Is(err, eventstore.ErrWrongVersion) {
			return "", err
		}
		if claim, err = a.readClaim(ctx, stream); err != nil {
			return "", err
		}
		if claim == nil {
			return "", fmt.Errorf("idempotency key claim appended to %s but not read back", stream)
		}
	}
	if claim.RequestSHA256 != digest {
		return "", &httpError{http.StatusUnprocessableEntity,
			"Idempotency-Key was already used with a different request body; send a new key for a new request"}
	}
	return claim.OrderID, nil
}

func (a *app) readClaim(ctx context.Context, stream string) (*IdempotencyKeyClaimed, error) {
	evs, err := a.store.ReadStream(ctx, stream, 1, 1)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	var c IdempotencyKeyClaimed
	if err := json.Unmarshal(evs[0].Data, &c); err != nil {
		return nil, fmt.Errorf("decode %s of %s: %w", evs[0].Type, stream, err)
	}
	return &c, nil
}
