package route

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Batcher is one shard's group commit: concurrent appends on the
// leader are coalesced into one raft entry, bounded by MaxEntryRequests,
// MaxEntryBytes and Linger. At most MaxInflight entries are proposed and not
// yet applied; appends that arrive meanwhile gather into the next entry, so
// batches grow with load and latency stays one commit when idle.
//
// Callers mostly append again as soon as they are answered. Proposing the
// next entry the moment a slot frees would split them into two cohorts that
// alternate between raft rounds, each round carrying about half of them
// (raft writes its log once per round, synchronously). So once a slot is
// free the batcher waits, up to CohortWait after the last entry was
// answered, until the batch holds as many appends as were waiting then
// plus as many as that entry answered: the callers it expects back. A
// caller that does not come back costs the others at most CohortWait.
//
// Large entries are pipelined: while every entry in flight carries at
// least PipelineBytes, one more may be proposed beyond MaxInflight. Raft
// then writes the next entry to its log (and sends it to followers) while
// the state machine applies the last one; for small entries the round's
// fixed latency dominates and the cohort wait above is what pays.
type Batcher struct {
	r        *raft.Raft
	reqs     chan *pendingAppend
	slots    chan struct{}
	extra    chan struct{} // the one slot beyond MaxInflight, for pipelining large entries
	inflight chan inflightEntry
	stop     chan struct{}
	done     chan struct{}
	started  bool // set by start, before any submit; close waits for done only if set

	maxReqs    int
	maxBytes   int
	linger     time.Duration
	cohortWait time.Duration
	entrySizes *core.Histogram
	refuse     func() error
	// pipelineBytes is PipelineBytes (0: no pipelining); smallInflight
	// counts the entries in flight that carry less.
	pipelineBytes int
	smallInflight atomic.Int32

	// Written by complete() after it answered an entry's appends: how many
	// entries it has answered, how many appends the last one held, and
	// when (unix nanoseconds).
	answered     atomic.Uint64
	lastAnswered atomic.Int64
	answeredAt   atomic.Int64
}

type pendingAppend struct {
	enc  []byte // encodeRequest output
	done chan appendReply
	// epoch is batcher.answered when the batcher took the append: an
	// append taken after the last answer may be one of its callers back.
	epoch uint64
}

// pendingPool recycles pendingAppends whose reply was received: one is
// never reused while complete() might still send to its channel.
var pendingPool = sync.Pool{New: func() any { return &pendingAppend{done: make(chan appendReply, 1)} }}

type appendReply struct {
	res core.AppendResult
	err error
}

type inflightEntry struct {
	fut   raft.ApplyFuture
	batch []*pendingAppend
	extra bool // holds the extra slot, not one of MaxInflight
	small bool // counted in smallInflight
}

// errRetry marks failures of a leader-side attempt after which the append
// should be retried (on this node or the new leader). It wraps
// ErrUnknownOutcome when the entry may have been committed.
type retryError struct {
	unknown bool
	cause   error
}

func (e *retryError) Error() string {
	return fmt.Sprintf("raftlog: retry append (outcome unknown: %v): %v", e.unknown, e.cause)
}
func (e *retryError) Unwrap() error { return e.cause }

// BatcherConfig bounds group commit (see raftlog.Config).
type BatcherConfig struct {
	MaxEntryRequests int
	MaxEntryBytes    int
	Linger           time.Duration
	MaxInflight      int
	CohortWait       time.Duration
	// PipelineBytes: while every entry in flight carries at least this
	// many bytes, one more entry may be proposed (0: never).
	PipelineBytes int
	// EntrySizes, if set, records the number of appends of every entry
	// answered.
	EntrySizes *core.Histogram
	// Refuse, if set, is asked before each append is queued: an error
	// fails the append at once, with nothing proposed (the shard's state
	// cannot be written: core.ErrDiskFull).
	Refuse func() error
}

// NewBatcher returns the group commit of raft r; Start starts it.
func NewBatcher(r *raft.Raft, cfg BatcherConfig) *Batcher {
	return &Batcher{
		r:        r,
		reqs:     make(chan *pendingAppend, 1024),
		slots:    make(chan struct{}, cfg.MaxInflight),
		extra:    make(chan struct{}, 1),
		inflight: make(chan inflightEntry, cfg.MaxInflight+1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		maxReqs:  cfg.MaxEntryRequests,
		maxBytes: cfg.MaxEntryBytes,
		linger:   cfg.Linger,

		cohortWait:    cfg.CohortWait,
		entrySizes:    cfg.EntrySizes,
		refuse:        cfg.Refuse,
		pipelineBytes: max(cfg.PipelineBytes, 0),
	}
}

// submit hands one encoded append to the batcher and waits for its
// outcome. A ctx that ends after the hand-off gives an unknown outcome;
// one that ends before it, a retryError that is not unknown.
func (b *Batcher) Submit(ctx context.Context, enc []byte) (core.AppendResult, error) {
	if b.refuse != nil {
		if err := b.refuse(); err != nil {
			return core.AppendResult{}, err
		}
	}
	p := pendingPool.Get().(*pendingAppend)
	p.enc = enc
	select {
	case b.reqs <- p:
	case <-ctx.Done():
		p.enc = nil
		pendingPool.Put(p)
		return core.AppendResult{}, &retryError{cause: ctx.Err()}
	case <-b.stop:
		p.enc = nil
		pendingPool.Put(p)
		return core.AppendResult{}, core.ErrClosed
	}
	select {
	case r := <-p.done:
		p.enc = nil
		pendingPool.Put(p)
		return r.res, r.err
	case <-ctx.Done():
		return core.AppendResult{}, &retryError{unknown: true, cause: ctx.Err()}
	case <-b.done:
		// Every append run took was answered before done closed; one
		// queued after run stopped was never proposed.
		select {
		case r := <-p.done:
			return r.res, r.err
		default:
			return core.AppendResult{}, core.ErrClosed
		}
	}
}

func (b *Batcher) Start() {
	b.started = true
	go b.complete()
	go b.run()
}

// close stops proposing, fails waiting appends with ErrClosed and waits
// for in-flight entries to resolve. It must run while raft still runs:
// raft does not resolve an Apply future still queued in its buffered
// apply channel at shutdown (BatchApplyCh), and complete() would wait for
// it forever.
func (b *Batcher) Close() {
	close(b.stop)
	if b.started {
		<-b.done
	}
}

func (b *Batcher) run() {
	defer close(b.inflight) // lets complete() finish after the last entry
	var (
		batch []*pendingAppend
		size  int
		carry *pendingAppend
	)
	add := func(p *pendingAppend) bool {
		p.epoch = b.answered.Load()
		if len(batch) > 0 && size+len(p.enc) > b.maxBytes {
			carry = p
			return false
		}
		batch = append(batch, p)
		size += len(p.enc)
		return true
	}
	full := func() bool { return carry != nil || len(batch) >= b.maxReqs || size >= b.maxBytes }
	failAll := func() {
		if carry != nil {
			batch = append(batch, carry)
		}
		for _, p := range batch {
			p.done <- appendReply{err: core.ErrClosed}
		}
		for {
			select {
			case p := <-b.reqs:
				p.done <- appendReply{err: core.ErrClosed}
			default:
				return
			}
		}
	}
	for {
		if carry != nil {
			p := carry
			carry = nil
			add(p)
		}
		if len(batch) == 0 {
			select {
			case p := <-b.reqs:
				add(p)
			case <-b.stop:
				failAll()
				return
			}
		}
	gather: // take what is already queued
		for !full() {
			select {
			case p := <-b.reqs:
				add(p)
			default:
				break gather
			}
		}
		if b.linger > 0 && !full() && !b.lingerFor(add, full) {
			failAll()
			return
		}
		// Wait for a free slot, taking more appends meanwhile. The extra
		// slot is offered only when the others are taken and no small
		// entry is in flight; an entry that completes frees a slot, which
		// ends the select, so the condition is looked at again whenever
		// it can change.
		var extra bool
	wait:
		for {
			select {
			case b.slots <- struct{}{}:
				break wait
			default:
			}
			reqs := b.reqs
			if full() {
				reqs = nil
			}
			var extraSlot chan struct{}
			if b.pipelineBytes > 0 && b.smallInflight.Load() == 0 {
				extraSlot = b.extra
			}
			select {
			case b.slots <- struct{}{}:
				break wait
			case extraSlot <- struct{}{}:
				extra = true
				break wait
			case p := <-reqs:
				add(p)
			case <-b.stop:
				failAll()
				return
			}
		}
		if !full() && !b.awaitCohort(batch, add, full) {
			failAll()
			return
		}
		data := wire.EncodeEntryHeader(make([]byte, 0, size+16), time.Now().UnixNano(), len(batch))
		for _, p := range batch {
			data = append(data, p.enc...)
		}
		small := len(data) < b.pipelineBytes
		if small {
			b.smallInflight.Add(1)
		}
		b.inflight <- inflightEntry{fut: b.r.Apply(data, 0), batch: batch, extra: extra, small: small}
		batch, size = nil, 0
	}
}

// complete resolves in-flight entries in proposal order.
func (b *Batcher) complete() {
	defer close(b.done)
	for e := range b.inflight {
		err := e.fut.Error()
		var outs []core.AppendOutcome
		var rejected error // the state machine refused the entry: final, not retried
		if err == nil {
			switch r := e.fut.Response().(type) {
			case []core.AppendOutcome:
				outs = r
			case error:
				rejected = r
			}
			if rejected == nil && len(outs) != len(e.batch) {
				err = fmt.Errorf("raftlog: entry applied with %d outcomes for %d appends", len(outs), len(e.batch))
			}
		}
		// The entry is out of raft: free its slot before answering, so that
		// the batcher, not this goroutine, is what the callers coming back
		// find waiting (after the cohort's expectation is published).
		b.lastAnswered.Store(int64(len(e.batch)))
		b.answeredAt.Store(time.Now().UnixNano())
		b.answered.Add(1)
		if b.entrySizes != nil {
			b.entrySizes.Observe(int64(len(e.batch)))
		}
		if e.small {
			b.smallInflight.Add(-1)
		}
		if e.extra {
			<-b.extra
		} else {
			<-b.slots
		}
		for i, p := range e.batch {
			switch {
			case rejected != nil:
				p.done <- appendReply{err: rejected}
				continue
			case err != nil:
				p.done <- appendReply{err: classifyApplyError(err)}
				continue
			}
			p.done <- appendReply{res: outs[i].Result, err: outs[i].Err}
		}
	}
}

// classifyApplyError turns a raft Apply error into ours.
func classifyApplyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return &retryError{cause: err} // rejected before it was proposed
	case errors.Is(err, raft.ErrRaftShutdown):
		return &retryError{unknown: true, cause: core.ErrClosed}
	default: // ErrLeadershipLost, ErrEnqueueTimeout, log store failures
		return &retryError{unknown: true, cause: err}
	}
}

// lingerFor gathers appends for up to Linger or until the batch is full. It
// reports false if the batcher was stopped.
func (b *Batcher) lingerFor(add func(*pendingAppend) bool, full func() bool) bool {
	t := time.NewTimer(b.linger)
	defer t.Stop()
	for !full() {
		select {
		case p := <-b.reqs:
			add(p)
		case <-t.C:
			return true
		case <-b.stop:
			return false
		}
	}
	return true
}

// awaitCohort waits, with a slot in hand, for the appends the batcher
// expects back from the last answered entry (see batcher): until batch
// holds the appends taken before that answer plus as many as it answered,
// the batch is full, or CohortWait has passed since the answer. It reports
// false if the batcher was stopped.
func (b *Batcher) awaitCohort(batch []*pendingAppend, add func(*pendingAppend) bool, full func() bool) bool {
	if b.cohortWait <= 0 {
		return true
	}
	epoch := b.answered.Load()
	deadline := time.Unix(0, b.answeredAt.Load()).Add(b.cohortWait)
	wait := time.Until(deadline)
	if wait <= 0 {
		return true
	}
	before := 0
	for _, p := range batch {
		if p.epoch != epoch {
			before++
		}
	}
	target := before + int(b.lastAnswered.Load())
	n := len(batch)
	if n >= target {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for n < target && !full() {
		select {
		case p := <-b.reqs:
			add(p)
			n++
		case <-t.C:
			return true
		case <-b.stop:
			return false
		}
	}
	return true
}
