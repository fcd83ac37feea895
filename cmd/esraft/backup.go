package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/esraft/esraft/admin"
	"github.com/esraft/esraft/raftlog"
)

// backup downloads a backup of the node at --addr (GET /admin/backup) to
// a file, with progress on stderr, and prints its manifest.
func backup(c *client, args []string) error {
	var out string
	if _, err := c.parse("backup", "backup --out FILE|DIR [flags]\n\nA consistent copy of the node at --addr (every shard's state, as of a flush made\nfor it) while it runs, written to FILE, or to DIR/esraft-<UTC time>.backup (through\na .part file, renamed when whole).\nIt holds every event as stored (the data of encrypted events sealed, their keys left\nout: see esraft keys): keep it as you keep the data directories.\n--timeout bounds the wait for the node's first byte, not the download.", args, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "the backup file to write, or an existing directory to write it in (required; a file is never overwritten)")
	}); err != nil {
		return err
	}
	if out == "" {
		return usageErr("backup: --out FILE or DIR is required")
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		out = filepath.Join(out, "esraft-"+time.Now().UTC().Format("20060102T150405Z")+".backup")
	}
	var info raftlog.BackupInfo
	err := c.download("/admin/backup", out, false, func(r io.Reader) error {
		var err error
		info, err = receiveBackup(r, c.stderr)
		return err
	})
	if err != nil {
		return err
	}
	if c.json {
		return c.print(info, nil)
	}
	return c.print(info, func(t *tabwriter.Writer) {
		fmt.Fprintf(t, "backup of node %s of cluster %s written to %s (%s)\n\n", info.NodeID, orDash(info.ClusterID), out, size(info.Bytes()))
		row(t, "SHARD", "APPLIED INDEX")
		for s, a := range info.Applied {
			row(t, s, a)
		}
		fmt.Fprintln(t)
		row(t, "PARTITION", "EVENTS BELOW OFFSET")
		for p, h := range info.Heads {
			row(t, p, h)
		}
	})
}

// download GETs path into file out through out.part, renamed once read
// whole (never over an existing file), read passing the body on its way.
// --timeout bounds the wait for the answer, and the whole download when
// bounded is set.
func (c *client) download(path, out string, bounded bool, read func(io.Reader) error) error {
	if _, err := os.Stat(out); err == nil {
		return usageErr("%s exists: choose another file", out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := time.AfterFunc(c.timeout, cancel)
	resp, err := c.send(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiError(resp.StatusCode, data)
	}
	if !bounded {
		first.Stop()
	}
	part := out + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return &exitError{exitFailed, err}
	}
	defer os.Remove(part) // after the rename, nothing to remove
	err = read(io.TeeReader(resp.Body, f))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(part, out)
	}
	if err != nil {
		return &exitError{exitFailed, fmt.Errorf("GET %s: %w", path, err)}
	}
	return nil
}

// receiveBackup reads a whole backup from r, checking its manifest and
// that every shard's copy is as long as it says, and reports progress.
// The copies' own checksums are checked by restore.
func receiveBackup(r io.Reader, progress io.Writer) (raftlog.BackupInfo, error) {
	info, err := raftlog.ReadBackupInfo(r)
	if err != nil {
		return info, err
	}
	total := info.Bytes() + 8*int64(info.Shards)
	show := progressPrinter("backup", progress)
	var done int64
	buf := make([]byte, 1<<20)
	for {
		n, err := r.Read(buf)
		done += int64(n)
		show(done, total)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return info, fmt.Errorf("after %s of %s: %w", size(done), size(total), err)
		}
	}
	if done != total {
		return info, fmt.Errorf("the node sent %s of %s: the backup is incomplete", size(done), size(total))
	}
	return info, nil
}

// progressPrinter returns a function that prints "verb: X of Y (Z%)" on
// w, at most every second and at the end.
func progressPrinter(verb string, w io.Writer) func(done, total int64) {
	var last time.Time
	return func(done, total int64) {
		if done < total && time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(w, "%s: %s of %s (%.0f%%)\n", verb, size(done), size(total), pct)
	}
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

const restoreUsage = `usage: esraft restore --from FILE --dir DIR --node ID [--peers id=host:port,...] [--cluster-id UUID]

Writes a new node's data directory DIR (missing or empty) from a backup
(esraft backup), for a NEW cluster: it gets a new cluster ID, so its nodes
never start among the cluster the backup was taken of, nor its nodes among
them. Without --peers the node is a single node. For a cluster, restore every
node from the same backup with the same --peers and the cluster ID the first
restore prints (--cluster-id), then start them with their usual flags and
those peers. With TLS, give the new cluster certificates of a new cluster
name (esraft certs -cluster NEW): the old cluster's are then refused.

Flags:
`

// restore runs raftlog.Restore on this machine (no node involved).
func restore(args []string, stdout, stderr io.Writer) error {
	fs := localFlags("restore", restoreUsage, stderr)
	from := fs.String("from", "", "the backup file (required)")
	dir := fs.String("dir", "", "the new node's data directory (required; missing or empty)")
	node := fs.String("node", "", "the new node's ID (required)")
	peers := fs.String("peers", "", "the new cluster's voters, this node included: id=host:port,... (the same for every node)")
	addr := fs.String("addr", "", "without --peers: the single node's cluster address, if it has one")
	clusterID := fs.String("cluster-id", "", "the new cluster's ID, as the first restore of its nodes printed (default: a new one)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{exitUsage, err}
	}
	if fs.NArg() > 0 || *from == "" || *dir == "" || *node == "" {
		fs.Usage()
		return usageErr("restore: --from, --dir and --node are required, and nothing else")
	}
	cfg := raftlog.RestoreConfig{Dir: filepath.Clean(*dir), NodeID: *node, Addr: *addr, ClusterID: *clusterID,
		Progress: progressPrinter("restore", stderr)}
	for _, p := range splitList(*peers) {
		id, a, ok := strings.Cut(p, "=")
		if !ok || id == "" || a == "" {
			return usageErr("restore: --peers %q: want id=host:port,...", p)
		}
		cfg.Peers = append(cfg.Peers, raftlog.Peer{ID: id, Addr: a})
	}
	f, err := os.Open(*from)
	if err != nil {
		return &exitError{exitFailed, fmt.Errorf("restore: %w", err)}
	}
	defer f.Close()
	res, err := raftlog.Restore(context.Background(), f, cfg)
	if errors.Is(err, raftlog.ErrConfig) {
		return usageErr("%v", err)
	}
	if err != nil {
		return &exitError{exitFailed, err}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			ClusterID string             `json:"cluster_id"`
			Dir       string             `json:"dir"`
			Node      string             `json:"node"`
			Backup    raftlog.BackupInfo `json:"backup"`
		}{res.ClusterID, cfg.Dir, *node, res.Backup})
	}
	fmt.Fprintf(stdout, "restored node %s into %s: cluster %s (the backup's was %s), %d partitions, %d shards, %s\n",
		*node, cfg.Dir, res.ClusterID, orDash(res.Backup.ClusterID), res.Backup.Partitions, res.Backup.Shards, size(res.Backup.Bytes()))
	if len(cfg.Peers) > 1 && *clusterID == "" {
		fmt.Fprintf(stdout, "restore the other nodes with --cluster-id %s and the same --peers\n", res.ClusterID)
	}
	return nil
}

const keysUsage = `usage: esraft keys <subcommand> [flags]

The subject keys of crypto-shredding (eventstore.Encrypt), which backups
leave out (SECURITY.md):
  export --out FILE   the keys of the node at --addr (not those shredded), to FILE
  import FILE         add FILE's keys to the node at --addr: a cluster restored
                      from a backup reads what was not shredded again

An export is key material: delete it once imported.
`

func keys(c *client, args []string) error {
	return dispatch(c, "keys", keysUsage, subcommands{"export": keysExport, "import": keysImport}, args)
}

func keysExport(c *client, args []string) error {
	var out string
	if _, err := c.parse("keys export", "keys export --out FILE [flags]", args, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "the file to write (required; not overwritten; 0600)")
	}); err != nil {
		return err
	}
	if out == "" {
		return usageErr("keys export: --out FILE is required")
	}
	var lines int
	err := c.download("/admin/keys", out, true, func(r io.Reader) error {
		var err error
		lines, err = countLines(r)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%d key(s) written to %s: delete it once imported\n", lines, out)
	return nil
}

func countLines(r io.Reader) (int, error) {
	n := 0
	buf := make([]byte, 64<<10)
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func keysImport(c *client, args []string) error {
	pos, err := c.parse("keys import", "keys import FILE [flags]", args, 1, nil)
	if err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return usageErr("keys import: %v", err)
	}
	defer f.Close()
	var res admin.KeyImport
	if err := c.post("POST", "/admin/keys", f, &res); err != nil {
		return err
	}
	return c.print(res, func(t *tabwriter.Writer) {
		fmt.Fprintf(t, "%d key(s) imported (keys already present are kept)\n", res.Imported)
	})
}
