package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esraft/esraft/internal/mux"
	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// The client's group commit: concurrent appends of one Remote travel
// together, in one client call (route.MethodClientAppends) that the node
// runs at once, so that they reach the leader's group commit together and
// their answers come back in one frame. Sent one call each, they reached
// the leader one by one, a network round trip after their previous
// answer, later than the leader waits for the callers it answered to come
// back (CohortWait), so its entries held fewer appends (0.42x the embedded
// throughput at 64 appenders, BENCHMARKS.md).
//
// The appender is shaped like the leader's batcher, on this side of the
// hop: at most remoteAppendCalls calls are in flight; appends that arrive
// meanwhile gather into the next call; and once a call may go, it waits
// up to remoteCohortWait after the last answer for as many appends as that
// answer released (this process's goroutines, back within microseconds
// on an idle machine, a millisecond or more on a loaded one). A lone
// append goes at once, as a call of its own (MethodClientAppend). The
// node hands a call's appends to the leader's batcher together
// (route.Batcher.SubmitAll), so that they share an entry.
//
// One call in flight and a 2 ms cohort wait gave the fullest entries on
// the loaded 2-core machine (about 44 appends per entry at 64 appenders,
// against 36 with 4 calls in flight or a 500 µs wait; BENCHMARKS.md).
//
// Each append keeps its own result, error and record IDs (fixed before the
// first attempt). One whose call failed, or whose reply says it may be
// retried, goes on alone through the retrying path of every call
// (Remote.call), its outcome unknown if the failed attempt may have
// applied it; the log deduplicates it by its IDs.
const (
	remoteAppendCalls = 1
	remoteCohortWait  = 2 * time.Millisecond
	// remoteAppendBytes bounds the requests of one call (a frame holds
	// 64 MiB).
	remoteAppendBytes = 8 << 20
)

// remoteAppend is one append waiting for its call's answer.
type remoteAppend struct {
	ctx  context.Context
	enc  []byte
	done chan remoteAnswer // buffered: the sender never blocks on it
}

// remoteAnswer is an append's outcome in its call: the node's reply to
// it (route.ClientReply), or the call's failure.
type remoteAnswer struct {
	reply   []byte
	addr    string // the node the call went to
	err     error
	unknown bool // err: the call may have applied it
}

// remoteAppender gathers a Remote's appends into calls.
type remoteAppender struct {
	r     *Remote
	queue chan *remoteAppend
	slots chan struct{}
	wg    sync.WaitGroup // run and the calls in flight

	// The last answered call: how many appends it held and when its
	// answers were given (unix nanoseconds).
	lastAnswered atomic.Int64
	answeredAt   atomic.Int64
	// grouped counts the calls that carried more than one append.
	grouped atomic.Uint64
}

func newRemoteAppender(r *Remote) *remoteAppender {
	a := &remoteAppender{r: r, queue: make(chan *remoteAppend, route.MaxClientAppends), slots: make(chan struct{}, remoteAppendCalls)}
	a.wg.Add(1)
	go a.run()
	return a
}

// append sends enc (an encoded request with every record's ID) with the
// appends of other goroutines and returns the decoder of its result.
func (a *remoteAppender) append(ctx context.Context, enc []byte) (*wire.Decoder, error) {
	p := &remoteAppend{ctx: ctx, enc: enc, done: make(chan remoteAnswer, 1)}
	select {
	case a.queue <- p:
	case <-ctx.Done():
		return nil, route.GiveUp(ctx.Err(), false)
	case <-a.r.closing:
		return nil, route.GiveUp(ErrClosed, false)
	}
	var ans remoteAnswer
	select {
	case ans = <-p.done:
	case <-ctx.Done():
		return nil, route.GiveUp(ctx.Err(), true) // it may be on its way
	case <-a.r.closing:
		return nil, route.GiveUp(ErrClosed, true)
	}
	err, unknown := ans.err, ans.unknown
	if err == nil {
		var d *wire.Decoder
		if d, err = route.ClientResult(ans.reply); err == nil {
			return d, nil
		}
		retry, unk := route.Retryable(err)
		if !retry {
			return nil, err // the node's answer: a failed condition, a refusal
		}
		unknown = unk
	}
	if errors.Is(err, mux.ErrClosed) {
		return nil, route.GiveUp(ErrClosed, unknown)
	}
	// On alone, on the next node if this one failed or refused.
	if retry, _ := route.Retryable(err); retry {
		a.r.failover(ans.addr, err)
	}
	return a.r.attempt(ctx, route.MethodClientAppend, enc, true, unknown)
}

// run gathers queued appends into calls until the Remote closes.
func (a *remoteAppender) run() {
	defer a.wg.Done()
	var batch []*remoteAppend
	size := 0
	var carry *remoteAppend
	add := func(p *remoteAppend) {
		if len(batch) > 0 && size+len(p.enc) > remoteAppendBytes {
			carry = p
			return
		}
		batch, size = append(batch, p), size+len(p.enc)
	}
	full := func() bool { return carry != nil || len(batch) >= route.MaxClientAppends }
	for {
		if carry != nil {
			p := carry
			carry = nil
			add(p)
		}
		if len(batch) == 0 {
			select {
			case p := <-a.queue:
				add(p)
			case <-a.r.closing:
				return
			}
		}
		// A free call, taking appends meanwhile.
	slot:
		for {
			queue := a.queue
			if full() {
				queue = nil
			}
			select {
			case a.slots <- struct{}{}:
				break slot
			case p := <-queue:
				add(p)
			case <-a.r.closing:
				return
			}
		}
		if !a.awaitCohort(add, &batch, full) {
			return
		}
		a.wg.Add(1)
		go a.send(batch)
		batch, size = nil, 0
	}
}

// awaitCohort takes what is queued, then waits up to remoteCohortWait
// after the last answer until the batch holds as many appends as that
// answer released. It reports false if the Remote closed.
func (a *remoteAppender) awaitCohort(add func(*remoteAppend), batch *[]*remoteAppend, full func() bool) bool {
	for !full() {
		select {
		case p := <-a.queue:
			add(p)
			continue
		default:
		}
		break
	}
	target := int(a.lastAnswered.Load())
	wait := time.Until(time.Unix(0, a.answeredAt.Load()).Add(remoteCohortWait))
	if len(*batch) >= target || full() || wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for len(*batch) < target && !full() {
		select {
		case p := <-a.queue:
			add(p)
		case <-t.C:
			return true
		case <-a.r.closing:
			return false
		}
	}
	return true
}

// send makes one call of batch's appends and gives each its answer.
func (a *remoteAppender) send(batch []*remoteAppend) {
	defer a.wg.Done()
	wait := time.Duration(0)
	for _, p := range batch {
		w := a.r.cfg.CallTimeout
		if dl, ok := p.ctx.Deadline(); ok {
			w = min(w, time.Until(dl))
		}
		wait = max(wait, w)
	}
	code, body := route.MethodClientAppend, batch[0].enc
	if len(batch) > 1 {
		encs := make([][]byte, len(batch))
		for i, p := range batch {
			encs[i] = p.enc
		}
		code, body = route.MethodClientAppends, route.AppendAppends(nil, encs)
		a.grouped.Add(1)
	}
	payload := binary.AppendUvarint(make([]byte, 0, 4+len(body)), uint64(max(wait/time.Millisecond, 1)))
	addr := a.r.node()
	ctx, cancel := context.WithTimeout(context.Background(), max(wait, 0)+remoteGrace)
	resp, err := a.r.client.Call(ctx, addr, code, append(payload, body...))
	timedOut := ctx.Err() != nil
	cancel()
	replies := [][]byte{resp}
	if err == nil && code == route.MethodClientAppends {
		var d *wire.Decoder
		if d, err = route.ClientResult(resp); err == nil {
			if replies = route.DecodeReplies(d, len(batch)); d.Finish() != nil {
				err = fmt.Errorf("%w (%w): malformed answers to %d appends", ErrCorrupt, ErrUnknownOutcome, len(batch))
			}
		}
	}
	unknown := timedOut
	if err != nil {
		_, unk := route.Retryable(err)
		unknown = unknown || unk || errors.Is(err, ErrUnknownOutcome)
	}
	// Free the call before answering, so that the appends coming back
	// find the sender waiting for them.
	a.lastAnswered.Store(int64(len(batch)))
	a.answeredAt.Store(time.Now().UnixNano())
	<-a.slots
	for i, p := range batch {
		if err != nil {
			p.done <- remoteAnswer{addr: addr, err: err, unknown: unknown}
		} else {
			p.done <- remoteAnswer{addr: addr, reply: replies[i]}
		}
	}
}

// wait waits for the remoteAppender's goroutines, once the Remote closed.
func (a *remoteAppender) wait() { a.wg.Wait() }
