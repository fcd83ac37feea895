package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/esraft/esraft/admin"
)

// A verb group: its subcommands by name.
type subcommands map[string]func(c *client, args []string) error

// onDispatch, set by tests, sees every group's usage and subcommands.
var onDispatch func(group, usage string, subs subcommands)

// dispatch runs the subcommand args[0] of group.
func dispatch(c *client, group, usage string, subs subcommands, args []string) error {
	if onDispatch != nil {
		onDispatch(group, usage, subs)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(c.stderr, usage)
		if len(args) == 0 {
			return usageErr("%s: no subcommand", group)
		}
		return nil
	}
	run, ok := subs[args[0]]
	if !ok {
		fmt.Fprint(c.stderr, usage)
		return usageErr("%s: unknown subcommand %q", group, args[0])
	}
	return run(c, args[1:])
}

func status(c *client, args []string) error {
	if _, err := c.parse("status", "status [flags]\n\nThe cluster as the node at --addr sees it: its members (probed), each shard's\nleader, term and indexes, and how far each replica is behind.", args, 0, nil); err != nil {
		return err
	}
	var st admin.Status
	if err := c.get("/admin/status", &st); err != nil {
		return err
	}
	return c.print(st, func(t *tabwriter.Writer) {
		fmt.Fprintf(t, "cluster %s, seen from node %s (%s)\n\n", orDash(st.ClusterID), st.Node, st.Addr)
		row(t, "NODE", "ROLE", "ADDRESS", "REACHABLE", "LEADS")
		for _, n := range st.Nodes {
			reach := "yes"
			if !n.Reachable {
				reach = "no: " + n.Error
			}
			row(t, n.ID, n.Role, n.Addr, reach, joinInts(n.Leads))
		}
		fmt.Fprintln(t)
		row(t, "SHARD", "LEADER", "TERM", "COMMIT", "REPLICA", "APPLIED", "BEHIND")
		for _, s := range st.Shards {
			if len(s.Replicas) == 0 {
				row(t, s.Shard, orDash(s.Leader), s.Term, s.CommitIndex, "-", s.AppliedIndex, "-")
			}
			for i, r := range s.Replicas {
				if i == 0 {
					row(t, s.Shard, orDash(s.Leader), s.Term, s.CommitIndex, r.Node, r.AppliedIndex, r.Behind)
				} else {
					row(t, "", "", "", "", r.Node, r.AppliedIndex, r.Behind)
				}
			}
		}
	})
}

const clusterUsage = `usage: esraft cluster <subcommand> [flags]

Subcommands:
  add ID ADDR [--worker]   add a node (a voter, or a worker) at its cluster address
  remove ID                remove a node from every shard
  promote ID               make a worker (non-voter) a voter
  transfer --shard N [--to ID]
                           hand shard N's leadership to ID (any up-to-date voter if
                           none); send it to the shard's leader
  rebalance                move the leaderships the node at --addr holds beyond its
                           share to voters that lead fewer (also: balance)
`

func cluster(c *client, args []string) error {
	return dispatch(c, "cluster", clusterUsage, subcommands{
		"add": func(c *client, args []string) error {
			var worker bool
			pos, err := c.parse("cluster add", "cluster add ID ADDR [--worker] [flags]", args, 2, func(fs *flag.FlagSet) {
				fs.BoolVar(&worker, "worker", false, "add it as a worker (non-voter)")
			})
			if err != nil {
				return err
			}
			req := admin.AddNodeRequest{ID: pos[0], Addr: pos[1], Role: "voter"}
			if worker {
				req.Role = "worker"
			}
			return c.nodeChange("POST", "/admin/cluster/nodes", req)
		},
		"remove": func(c *client, args []string) error {
			pos, err := c.parse("cluster remove", "cluster remove ID [flags]", args, 1, nil)
			if err != nil {
				return err
			}
			return c.nodeChange("DELETE", "/admin/cluster/nodes/"+url.PathEscape(pos[0]), nil)
		},
		"promote": func(c *client, args []string) error {
			pos, err := c.parse("cluster promote", "cluster promote ID [flags]", args, 1, nil)
			if err != nil {
				return err
			}
			return c.nodeChange("POST", "/admin/cluster/nodes/"+url.PathEscape(pos[0])+"/promote", nil)
		},
		"transfer": func(c *client, args []string) error {
			shard := -1
			var to string
			if _, err := c.parse("cluster transfer", "cluster transfer --shard N [--to ID] [flags]", args, 0, func(fs *flag.FlagSet) {
				fs.IntVar(&shard, "shard", -1, "the shard (required)")
				fs.StringVar(&to, "to", "", "the voter to hand leadership to (default: the most up-to-date)")
			}); err != nil {
				return err
			}
			if shard < 0 {
				return usageErr("cluster transfer: --shard is required")
			}
			var out admin.Transfer
			if err := c.post("POST", fmt.Sprintf("/admin/cluster/shards/%d/transfer", shard), admin.TransferRequest{To: to}, &out); err != nil {
				return err
			}
			return c.print(out, func(t *tabwriter.Writer) {
				fmt.Fprintf(t, "shard %d: leadership moved from %s to %s\n", out.Shard, out.From, orDash(out.Leader))
			})
		},
		"rebalance": rebalance,
		"balance":   rebalance,
	}, args)
}

func rebalance(c *client, args []string) error {
	if _, err := c.parse("cluster rebalance", "cluster rebalance [flags]", args, 0, nil); err != nil {
		return err
	}
	var out admin.Rebalance
	if err := c.post("POST", "/admin/cluster/rebalance", nil, &out); err != nil {
		return err
	}
	return c.print(out, func(t *tabwriter.Writer) {
		fmt.Fprintf(t, "node %s moved %d leadership(s)\n", out.Node, out.Moved)
	})
}

func (c *client) nodeChange(method, path string, body any) error {
	var out admin.NodeChange
	if err := c.post(method, path, body, &out); err != nil {
		return err
	}
	return c.print(out, func(t *tabwriter.Writer) {
		if out.Role != "" {
			fmt.Fprintf(t, "node %s %s as %s\n", out.Node, out.Action, out.Role)
		} else {
			fmt.Fprintf(t, "node %s %s\n", out.Node, out.Action)
		}
	})
}

const streamsUsage = `usage: esraft streams <subcommand> [flags]

Subcommands:
  ls [--prefix P | --category C] [--limit N] [--after S] [--all]
                           list streams, a page at a time, from the stream index
  show STREAM              a stream's version, partition and state (also: info)
  read STREAM [--from V] [--limit N] [--backward]
                           read a stream's events
  tail STREAM [--from V]   follow a stream's new events (from version V: its events
                           from there first) until interrupted
`

func streams(c *client, args []string) error {
	return dispatch(c, "streams", streamsUsage, subcommands{
		"ls":   streamsLs,
		"show": streamsShow,
		"info": streamsShow,
		"read": streamsRead,
		"tail": streamsTail,
	}, args)
}

// streamsTail prints the server-sent events of a stream's tail: a table
// row (or the event's JSON with --json) per event.
func streamsTail(c *client, args []string) error {
	from := int64(0)
	var count int
	pos, err := c.parse("streams tail", "streams tail STREAM [--from VERSION] [--count N] [flags]", args, 1, func(fs *flag.FlagSet) {
		fs.Int64Var(&from, "from", 0, "first version (default: the stream's next: new events only)")
		fs.IntVar(&count, "count", 0, "stop after this many events (0: never)")
	})
	if err != nil {
		return err
	}
	path := "/admin/streams/" + url.PathEscape(pos[0]) + "/tail"
	if from > 0 {
		path += "?from=" + strconv.FormatInt(from, 10)
	}
	return c.follow("streams tail", path, count, func(e admin.Event) {
		fmt.Fprintf(c.stdout, "%d\t%s\t%d/%d\t%s\n", e.Version, e.Type, e.Partition, e.Offset, eventData(e))
	})
}

func streamsLs(c *client, args []string) error {
	var prefix, category, after string
	var limit int
	var all bool
	if _, err := c.parse("streams ls", "streams ls [--prefix P | --category C] [--limit N] [--after S] [--all] [flags]", args, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&prefix, "prefix", "", "streams whose name starts with this")
		fs.StringVar(&category, "category", "", "streams of this category (the name before the first '-')")
		fs.StringVar(&after, "after", "", "start after this stream (the next page of an earlier listing)")
		fs.IntVar(&limit, "limit", 100, "streams per page (1..1000)")
		fs.BoolVar(&all, "all", false, "follow every page to the end")
	}); err != nil {
		return err
	}
	if prefix != "" && category != "" {
		return usageErr("streams ls: give --prefix or --category, not both")
	}
	if limit < 1 || limit > 1000 {
		return usageErr("streams ls: --limit %d is out of range 1..1000", limit)
	}
	total := 0
	for page := 0; ; page++ {
		q := url.Values{"prefix": {prefix}, "category": {category}, "after": {after}, "limit": {strconv.Itoa(limit)}}
		var out admin.StreamList
		if err := c.get("/admin/streams?"+q.Encode(), &out); err != nil {
			return err
		}
		total += len(out.Streams)
		err := c.print(out, func(t *tabwriter.Writer) {
			if page == 0 {
				row(t, "STREAM", "PARTITION", "VERSION", "STATE")
			}
			for _, s := range out.Streams {
				state := ""
				if s.Deleted {
					state = "deleted"
				}
				row(t, s.Stream, s.Partition, s.Version, state)
			}
		})
		if err != nil {
			return err
		}
		if out.Next == "" {
			if !c.json {
				fmt.Fprintf(c.stderr, "%d stream(s)\n", total)
			}
			return nil
		}
		if !all {
			if !c.json {
				fmt.Fprintf(c.stderr, "more: --after %q (or --all)\n", out.Next)
			}
			return nil
		}
		after = out.Next
	}
}

func streamsShow(c *client, args []string) error {
	pos, err := c.parse("streams show", "streams show STREAM [flags]", args, 1, nil)
	if err != nil {
		return err
	}
	var out admin.StreamInfo
	if err := c.get("/admin/streams/"+url.PathEscape(pos[0]), &out); err != nil {
		return err
	}
	return c.print(out, func(t *tabwriter.Writer) {
		row(t, "stream", out.Stream)
		row(t, "partition", out.Partition)
		row(t, "version", out.Version)
		row(t, "first version", out.FirstVersion)
		row(t, "deleted", out.Deleted)
	})
}

func streamsRead(c *client, args []string) error {
	var from uint64
	var limit int
	var backward bool
	pos, err := c.parse("streams read", "streams read STREAM [--from V] [--limit N] [--backward] [flags]", args, 1, func(fs *flag.FlagSet) {
		fs.Uint64Var(&from, "from", 0, "first version to read (backward: the last; 0: the end)")
		fs.IntVar(&limit, "limit", 100, "events to read (1..1000)")
		fs.BoolVar(&backward, "backward", false, "read from the newest event back")
	})
	if err != nil {
		return err
	}
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "limit": {strconv.Itoa(limit)}}
	if backward {
		q.Set("direction", "backward")
	}
	var out admin.EventPage
	if err := c.get("/admin/streams/"+url.PathEscape(pos[0])+"/events?"+q.Encode(), &out); err != nil {
		return err
	}
	return c.print(out, func(t *tabwriter.Writer) { eventTable(t, out.Events) })
}

func eventTable(t *tabwriter.Writer, evs []admin.Event) {
	row(t, "VERSION", "TYPE", "PARTITION", "OFFSET", "TIME", "DATA")
	for _, e := range evs {
		row(t, e.Version, e.Type, e.Partition, e.Offset, e.Time.Format(time.RFC3339Nano), eventData(e))
	}
}

func eventData(e admin.Event) string {
	d := string(e.Data)
	if d == "" && e.DataBase64 != nil {
		d = fmt.Sprintf("(%d bytes, not JSON)", len(e.DataBase64))
	}
	if len(d) > 80 {
		d = d[:77] + "..."
	}
	return d
}

const partitionsUsage = `usage: esraft partitions <subcommand> [flags]

Subcommands:
  ls                       every partition's shard and next offset on the node
  tail P [--from OFFSET]   follow partition P's new events (from its head, or OFFSET)
                           until interrupted
`

func partitions(c *client, args []string) error {
	return dispatch(c, "partitions", partitionsUsage, subcommands{
		"ls": func(c *client, args []string) error {
			if _, err := c.parse("partitions ls", "partitions ls [flags]", args, 0, nil); err != nil {
				return err
			}
			var out admin.PartitionList
			if err := c.get("/admin/partitions", &out); err != nil {
				return err
			}
			return c.print(out, func(t *tabwriter.Writer) {
				row(t, "PARTITION", "SHARD", "NEXT OFFSET")
				for _, p := range out.Partitions {
					row(t, p.Partition, p.Shard, p.NextOffset)
				}
			})
		},
		"tail": partitionsTail,
	}, args)
}

// partitionsTail prints the server-sent events of a partition's tail: a
// table row (or the event's JSON with --json) per event.
func partitionsTail(c *client, args []string) error {
	from := int64(-1)
	var count int
	pos, err := c.parse("partitions tail", "partitions tail P [--from OFFSET] [--count N] [flags]", args, 1, func(fs *flag.FlagSet) {
		fs.Int64Var(&from, "from", -1, "first offset (default: the partition's head: new events only)")
		fs.IntVar(&count, "count", 0, "stop after this many events (0: never)")
	})
	if err != nil {
		return err
	}
	path := "/admin/partitions/" + url.PathEscape(pos[0]) + "/tail"
	if from >= 0 {
		path += "?from=" + strconv.FormatInt(from, 10)
	}
	return c.follow("partitions tail", path, count, func(e admin.Event) {
		fmt.Fprintf(c.stdout, "%d\t%s\t%s v%d\t%s\n", e.Offset, e.Type, e.Stream, e.Version, eventData(e))
	})
}

// follow reads the server-sent events at path, printing each event with
// line (or as its JSON with --json), until count events (0: until the
// connection ends or the user interrupts).
func (c *client) follow(verb, path string, count int, line func(admin.Event)) error {
	resp, err := c.send(context.Background(), "GET", path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var buf strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&buf)
		return apiError(resp.StatusCode, []byte(buf.String()))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	seen := 0
	var event string
	for sc.Scan() {
		text := sc.Text()
		if v, ok := strings.CutPrefix(text, "event: "); ok {
			event = v
			continue
		}
		data, ok := strings.CutPrefix(text, "data: ")
		if !ok {
			continue
		}
		if event == "error" {
			return apiError(500, []byte(data))
		}
		if c.json {
			fmt.Fprintln(c.stdout, data)
		} else {
			var e admin.Event
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				return fmt.Errorf("%s: bad event from the server: %w", verb, err)
			}
			line(e)
		}
		if seen++; count > 0 && seen >= count {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return &exitError{exitUnreachable, fmt.Errorf("%s: the stream broke: %w", verb, err)}
	}
	return &exitError{exitUnreachable, fmt.Errorf("%s: the server ended the stream", verb)}
}

const groupsUsage = `usage: esraft groups <subcommand> [flags]

Subcommands:
  ls                       consumer groups with their generation, members, lag and
                           parked events
  describe GROUP           members, generation, and per partition the owner, committed
                           offset, head and lag
  reset GROUP (--to-earliest | --to-latest | --to-time T | --to-offsets O,O,...) [--force] [--yes]
                           move every partition of a stopped group: back to replay,
                           forward to skip (T: RFC 3339; offsets: one per partition)
  delete GROUP [--yes]     remove a stopped group: its offsets and parked events

reset and delete are refused while the group has live members: stop them first,
or reset with --force, which fences them (their commits are refused; they join
again and resume from the new offsets). Both ask for confirmation unless --yes
is given, and refuse without a terminal.
`

func groups(c *client, args []string) error {
	return dispatch(c, "groups", groupsUsage, subcommands{
		"ls": func(c *client, args []string) error {
			if _, err := c.parse("groups ls", "groups ls [flags]", args, 0, nil); err != nil {
				return err
			}
			var out admin.GroupList
			if err := c.get("/admin/groups", &out); err != nil {
				return err
			}
			return c.print(out, func(t *tabwriter.Writer) {
				row(t, "GROUP", "GENERATION", "MEMBERS", "LAG", "PARKED")
				for _, g := range out.Groups {
					row(t, g.Group, g.Generation, g.Members, g.Lag, g.Parked)
				}
			})
		},
		"describe": func(c *client, args []string) error {
			pos, err := c.parse("groups describe", "groups describe GROUP [flags]", args, 1, nil)
			if err != nil {
				return err
			}
			var g admin.Group
			if err := c.get("/admin/groups/"+url.PathEscape(pos[0]), &g); err != nil {
				return err
			}
			return c.print(g, func(t *tabwriter.Writer) {
				fmt.Fprintf(t, "group %s, generation %d, lag %d, parked %d, skipped %d\n\n", g.Group, g.Generation, g.Lag, g.Parked, g.Skipped)
				row(t, "MEMBER", "PARTITIONS", "SESSION", "LAST SEEN")
				for _, m := range g.Members {
					row(t, m.ID, joinInts(m.Partitions), time.Duration(m.SessionTimeoutMS)*time.Millisecond, m.LastSeen.Format(time.RFC3339))
				}
				fmt.Fprintln(t)
				groupPartitions(t, g)
			})
		},
		"reset":  groupsReset,
		"delete": groupsDelete,
	}, args)
}

// groupPartitions writes the partition table of a group.
func groupPartitions(t *tabwriter.Writer, g admin.Group) {
	row(t, "PARTITION", "OWNER", "GENERATION", "COMMITTED", "HEAD", "LAG", "PARKED", "SKIPPED", "MOVING TO")
	for _, p := range g.Partitions {
		row(t, p.Partition, orDash(p.Owner), p.Generation, p.Committed, p.Head, p.Lag, p.Parked, p.Skipped, orDash(p.Next))
	}
}

func groupsReset(c *client, args []string) error {
	var earliest, latest, yes, force bool
	var at, offsets string
	pos, err := c.parse("groups reset", "groups reset GROUP (--to-earliest | --to-latest | --to-time T | --to-offsets O,O,...) [--force] [--yes] [flags]", args, 1, func(fs *flag.FlagSet) {
		fs.BoolVar(&earliest, "to-earliest", false, "replay from the start of every partition")
		fs.BoolVar(&latest, "to-latest", false, "skip to the head of every partition (only new events)")
		fs.StringVar(&at, "to-time", "", "from the first event at or after this time (RFC 3339)")
		fs.StringVar(&offsets, "to-offsets", "", "partition p from the p-th offset (comma-separated, one per partition)")
		fs.BoolVar(&force, "force", false, "reset even while members are live: fences them (their commits are refused; they join again and resume from the new offsets); refused unless every node's version knows it")
		fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	})
	if err != nil {
		return err
	}
	req := admin.ResetRequest{Force: force}
	var chosen []string
	if earliest {
		req.To, chosen = "earliest", append(chosen, "--to-earliest")
	}
	if latest {
		req.To, chosen = "latest", append(chosen, "--to-latest")
	}
	if at != "" {
		tm, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return usageErr("groups reset: --to-time %q is not an RFC 3339 time (e.g. 2026-11-29T14:00:00Z)", at)
		}
		req.To, req.Time, chosen = "time", &tm, append(chosen, "--to-time")
	}
	if offsets != "" {
		for _, f := range strings.Split(offsets, ",") {
			o, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				return usageErr("groups reset: --to-offsets: %q is not an offset", f)
			}
			req.Offsets = append(req.Offsets, o)
		}
		req.To, chosen = "offsets", append(chosen, "--to-offsets")
	}
	if len(chosen) != 1 {
		return usageErr("groups reset: give exactly one of --to-earliest, --to-latest, --to-time, --to-offsets (got %d)", len(chosen))
	}
	group := pos[0]
	where := map[string]string{"earliest": "the earliest offsets (every event is handled again)", "latest": "the latest offsets (events not yet handled are skipped)", "time": "the first events at or after " + at, "offsets": "offsets " + offsets}[req.To]
	question := fmt.Sprintf("Reset consumer group %q to %s?", group, where)
	if force {
		question = fmt.Sprintf("Force a reset of consumer group %q to %s? Live members are fenced: work they have not committed is done again.", group, where)
	}
	if err := c.confirm("groups reset", yes, question); err != nil {
		return err
	}
	var g admin.Group
	if err := c.post("POST", "/admin/groups/"+url.PathEscape(group)+"/reset", req, &g); err != nil {
		return err
	}
	return c.print(g, func(t *tabwriter.Writer) {
		fmt.Fprintf(t, "group %s reset to %s: generation %d, lag %d, parked %d\n\n", g.Group, req.To, g.Generation, g.Lag, g.Parked)
		groupPartitions(t, g)
	})
}

func groupsDelete(c *client, args []string) error {
	var yes bool
	pos, err := c.parse("groups delete", "groups delete GROUP [--yes] [flags]", args, 1, func(fs *flag.FlagSet) {
		fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	})
	if err != nil {
		return err
	}
	group := pos[0]
	if err := c.confirm("groups delete", yes, fmt.Sprintf("Delete consumer group %q with its committed offsets and parked events?", group)); err != nil {
		return err
	}
	var out admin.GroupDeleted
	if err := c.post("DELETE", "/admin/groups/"+url.PathEscape(group), nil, &out); err != nil {
		return err
	}
	return c.print(out, func(t *tabwriter.Writer) { fmt.Fprintf(t, "group %s %s\n", out.Group, out.Action) })
}

const parkedUsage = `usage: esraft parked <subcommand> (--group G | --projection P) [flags]

Subcommands:
  ls                       events parked (dead-lettered) by a consumer group or by a
                           local projection of the node at --addr
  retry PARTITION OFFSET   handle the parked event again (with those parked behind it
                           on its stream)
  skip PARTITION OFFSET [--yes]
                           drop the parked event without handling it (it is counted as
                           skipped and logged; those parked behind it stay parked)

A group's owner carries out a retry or skip at its next heartbeat; a projection's
is done at once. skip asks for confirmation unless --yes is given, and refuses
without a terminal.
`

func parked(c *client, args []string) error {
	var group, proj string
	target := func(fs *flag.FlagSet) {
		fs.StringVar(&group, "group", "", "the consumer group")
		fs.StringVar(&proj, "projection", "", "the local projection (of the node at --addr)")
	}
	base := func() (string, error) {
		switch {
		case (group == "") == (proj == ""):
			return "", usageErr("parked: give --group or --projection")
		case group != "":
			return "/admin/groups/" + url.PathEscape(group) + "/parked", nil
		}
		return "/admin/projections/" + url.PathEscape(proj) + "/parked", nil
	}
	consumer := func() string {
		if group != "" {
			return fmt.Sprintf("Consumer group %q", group)
		}
		return fmt.Sprintf("Projection %q", proj)
	}
	return dispatch(c, "parked", parkedUsage, subcommands{
		"ls": func(c *client, args []string) error {
			if _, err := c.parse("parked ls", "parked ls (--group G | --projection P) [flags]", args, 0, target); err != nil {
				return err
			}
			path, err := base()
			if err != nil {
				return err
			}
			var out admin.ParkedList
			if err := c.get(path, &out); err != nil {
				return err
			}
			return c.print(out, func(t *tabwriter.Writer) {
				row(t, "PARTITION", "OFFSET", "STREAM", "ATTEMPTS", "ERROR")
				for _, p := range out.Parked {
					errText := p.Error
					if p.Retrying {
						errText = "(retry asked) " + errText
					}
					if p.Skipping {
						errText = "(skip asked) " + errText
					}
					row(t, p.Partition, p.Offset, p.Stream, p.Attempts, errText)
				}
			})
		},
		"retry": func(c *client, args []string) error { return parkedAction(c, "retry", args, target, base, consumer) },
		"skip":  func(c *client, args []string) error { return parkedAction(c, "skip", args, target, base, consumer) },
	}, args)
}

// parkedAction runs parked retry or parked skip (verb) of the event
// PARTITION OFFSET of the group or projection base names (consumer says
// which, for people). skip loses the event for that consumer, so it asks
// for confirmation.
func parkedAction(c *client, verb string, args []string, target func(*flag.FlagSet), base func() (string, error), consumer func() string) error {
	var yes bool
	setup := target
	if verb == "skip" {
		setup = func(fs *flag.FlagSet) {
			target(fs)
			fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
		}
	}
	name := "parked " + verb
	synopsis := name + " PARTITION OFFSET (--group G | --projection P) [flags]"
	if verb == "skip" {
		synopsis = name + " PARTITION OFFSET (--group G | --projection P) [--yes] [flags]"
	}
	pos, err := c.parse(name, synopsis, args, 2, setup)
	if err != nil {
		return err
	}
	path, err := base()
	if err != nil {
		return err
	}
	for _, p := range pos {
		if _, err := strconv.ParseUint(p, 10, 64); err != nil {
			return usageErr("%s: %q is not a partition or offset number", name, p)
		}
	}
	if verb == "skip" {
		q := fmt.Sprintf("Skip the parked event at partition %s offset %s? %s will never handle it.", pos[0], pos[1], consumer())
		if err := c.confirm(name, yes, q); err != nil {
			return err
		}
	}
	var out admin.Retry
	if err := c.post("POST", path+"/"+pos[0]+"/"+pos[1]+"/"+verb, nil, &out); err != nil {
		return err
	}
	done := map[string]string{"retry": "retried", "skip": "skipped"}[verb]
	return c.print(out, func(t *tabwriter.Writer) {
		if out.Remaining != nil {
			fmt.Fprintf(t, "partition %d offset %d %s; %d event(s) still parked\n", out.Partition, out.Offset, done, *out.Remaining)
		} else {
			fmt.Fprintf(t, "partition %d offset %d: %s asked of its owner\n", out.Partition, out.Offset, verb)
		}
	})
}

const projectionsUsage = `usage: esraft projections <subcommand> [flags]

Subcommands:
  ls                       the local projections of the node at --addr: state, lag,
                           parked events, rebuild progress
  rebuild NAME [--follow]  rebuild a projection from the start of the log while the
                           live one serves; --follow prints progress until it ends
`

func projections(c *client, args []string) error {
	return dispatch(c, "projections", projectionsUsage, subcommands{
		"ls": func(c *client, args []string) error {
			if _, err := c.parse("projections ls", "projections ls [flags]", args, 0, nil); err != nil {
				return err
			}
			var out admin.ProjectionList
			if err := c.get("/admin/projections", &out); err != nil {
				return err
			}
			return c.print(out, func(t *tabwriter.Writer) {
				row(t, "PROJECTION", "STATE", "LAG", "PARKED", "REBUILD")
				for _, p := range out.Projections {
					row(t, p.Name, p.State, p.Lag, p.Parked, progressText(p.Rebuild))
				}
			})
		},
		"rebuild": projectionsRebuild,
	}, args)
}

func projectionsRebuild(c *client, args []string) error {
	var follow bool
	interval := 500 * time.Millisecond
	pos, err := c.parse("projections rebuild", "projections rebuild NAME [--follow] [flags]", args, 1, func(fs *flag.FlagSet) {
		fs.BoolVar(&follow, "follow", false, "print the progress until the rebuild ends")
		fs.DurationVar(&interval, "interval", interval, "with --follow: how often to ask for progress")
	})
	if err != nil {
		return err
	}
	name := pos[0]
	path := "/admin/projections/" + url.PathEscape(name)
	var p admin.Projection
	if err := c.post("POST", path+"/rebuild", nil, &p); err != nil {
		return err
	}
	if !follow {
		return c.print(p, func(t *tabwriter.Writer) { fmt.Fprintf(t, "rebuild of %s started\n", name) })
	}
	var started time.Time
	if p.Rebuild != nil {
		started = p.Rebuild.Started
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if p.Rebuild == nil {
			return c.rebuildEnded(name, p, started)
		}
		if err := c.progress(name, p.Rebuild); err != nil {
			return err
		}
		<-tick.C
		p = admin.Projection{} // absent fields (a rebuild that ended) must not keep old values
		if err := c.get(path, &p); err != nil {
			return err
		}
	}
}

// rebuildEnded prints how the followed rebuild, started at started, ended,
// in the server's own figures (its last_rebuild): the line a script or a
// test reads at the end is what the server measured, never made up here.
func (c *client) rebuildEnded(name string, p admin.Projection, started time.Time) error {
	lr := p.LastRebuild
	if lr == nil || (!started.IsZero() && !lr.Started.Equal(started)) {
		// A server without last_rebuild, or another rebuild ended since.
		if strings.HasPrefix(p.State, "failed") {
			return &exitError{exitFailed, fmt.Errorf("rebuild of %s: %s", name, p.State)}
		}
		if c.json {
			return json.NewEncoder(c.stdout).Encode(map[string]any{"projection": name, "rebuild": nil, "done": true})
		}
		_, err := fmt.Fprintf(c.stdout, "%s ended (the server reported no final progress)\n", name)
		return err
	}
	if lr.Error != "" {
		return &exitError{exitFailed, fmt.Errorf("rebuild of %s failed at %.1f%% (%d/%d): %s", name, lr.Percent, lr.Replayed, lr.Total, lr.Error)}
	}
	if c.json {
		return json.NewEncoder(c.stdout).Encode(map[string]any{"projection": name, "rebuild": lr, "done": true})
	}
	_, err := fmt.Fprintf(c.stdout, "%s [%s] %.1f%% (%d/%d) done in %s\n", name, bar(lr.Percent), lr.Percent, lr.Replayed, lr.Total,
		lr.Ended.Sub(lr.Started).Round(time.Millisecond))
	return err
}

// progress prints one progress line (or JSON object) of a running
// rebuild.
func (c *client) progress(name string, r *admin.RebuildProgress) error {
	if c.json {
		return json.NewEncoder(c.stdout).Encode(map[string]any{"projection": name, "rebuild": r, "done": false})
	}
	_, err := fmt.Fprintf(c.stdout, "%s [%s] %s\n", name, bar(r.Percent), progressText(r))
	return err
}

func bar(percent float64) string {
	const width = 30
	n := int(percent / 100 * width)
	return strings.Repeat("#", n) + strings.Repeat(".", width-n)
}

func progressText(r *admin.RebuildProgress) string {
	if r == nil {
		return "-"
	}
	s := fmt.Sprintf("%.1f%% (%d/%d) %.0f events/s", r.Percent, r.Replayed, r.Total, r.Rate)
	if r.ETASeconds != nil {
		s += fmt.Sprintf(" ETA %s", (time.Duration(*r.ETASeconds * float64(time.Second))).Round(time.Second))
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinInts(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func scavenge(c *client, args []string) error {
	if _, err := c.parse("scavenge", "scavenge [flags]", args, 0, nil); err != nil {
		return err
	}
	var out admin.ScavengeResult
	if err := c.post("POST", "/admin/scavenge", nil, &out); err != nil {
		return err
	}
	return c.print(out, func(t *tabwriter.Writer) {
		if len(out.Truncated) > 0 {
			fmt.Fprintln(t, "PARTITION\tLOW OFFSET")
			for _, tr := range out.Truncated {
				fmt.Fprintf(t, "%d\t%d\n", tr.Partition, tr.LowOffset)
			}
		}
		fmt.Fprintf(t, "%d segment(s) removed, %d bytes freed on this node\n", out.SegmentsRemoved, out.BytesFreed)
	})
}
