package raftlog_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/esraft/esraft/raftlog"
)

// The embedded single-node log, as in the README: open with a directory,
// append conditionally, read a key back.
func Example() {
	dir, _ := os.MkdirTemp("", "raftlog-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	log, err := raftlog.Open(ctx, raftlog.Config{Dir: dir}) // single node; Peers or Join for a cluster
	if err != nil {
		panic(err)
	}
	defer log.Close()
	res, err := log.Append(ctx, "order-42", []raftlog.NewRecord{{Value: []byte(`{"placed":true}`)}},
		raftlog.ExpectKeySeq(0)) // only if the key is new; checked inside the state machine
	if err != nil {
		panic(err)
	}
	_, err = log.Append(ctx, "order-42", []raftlog.NewRecord{{Value: []byte("again")}}, raftlog.ExpectKeySeq(0))
	var conflict *raftlog.KeySeqError // the key's actual sequence is in conflict.Actual
	fmt.Println(res.Partition == log.Partition("order-42"), res.FirstOffset, res.FirstKeySeq, errors.As(err, &conflict), conflict.Actual)

	recs, err := log.ReadKey(ctx, res.Partition, "order-42", 1, raftlog.ReadOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println(len(recs), string(recs[0].Value))
	// Output:
	// true 0 1 true 1
	// 1 {"placed":true}
}
