// Command esraft is the esraft command-line tool: the operations verbs
// over a node's admin API (package admin), and certs, which makes a
// development certificate authority and node certificates for a
// cluster's mutual TLS, without openssl:
//
//	go run ./cmd/esraft status --addr 127.0.0.1:8081 --token s3cret
//	go run ./cmd/esraft streams ls --prefix order- --all
//	go run ./cmd/esraft groups reset billing --to-earliest --yes
//	go run ./cmd/esraft certs -dir certs -cluster orders -nodes n1,n2,n3 -workers w1
//
// See SECURITY.md for the identity format and for rotating certificates.
// Its subcommand schemas lists, shows, registers and checks the schemas of
// a schema registry through its Confluent-compatible API:
//
//	go run ./cmd/esraft schemas ls -url http://127.0.0.1:8080/registry
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/esraft/esraft/internal/nodecert"
)

const usage = `usage: esraft <command> [subcommand] [flags]

Commands over a node's admin API (--addr, --token or $ESRAFT_TOKEN, --cert/--key):
  status        the cluster: nodes, shard leaders, indexes, replicas behind
  cluster       add | remove | promote | transfer | rebalance (balance)
  streams       ls | show (info) | read | tail
  partitions    ls | tail
  groups        ls | describe | reset | delete
  parked        ls | retry | skip
  projections   ls | rebuild [--follow]
  scavenge      give disk space back: remove what retention, deletes and
                truncations hid, below each partition's first kept event
  backup        --out FILE|DIR: a consistent copy of the running node, with progress
  keys          export | import: the crypto-shredding keys, which backups leave out
Other:
  restore       --from FILE --dir DIR --node ID: a new node (of a new cluster) from a backup
  certs         make a development CA and per-node certificates for mutual TLS
  schemas       ls | show | register | check, over a schema registry's REST API

Tables by default, --json (or -o json) for the API's JSON. Exit codes: 0 done,
1 refused or failed by the server, 2 bad usage, 3 node unreachable,
4 not authenticated, 5 not found.

Run 'esraft <command> -h' for a command's subcommands and flags.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		if errors.Is(err, errIncompatible) {
			os.Exit(1) // the incompatibilities are printed
		}
		fmt.Fprintln(os.Stderr, "esraft:", err)
		code := exitUsage
		var e *exitError
		if errors.As(err, &e) {
			code = e.code
		}
		os.Exit(code)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "certs":
		return certs(args[1:], stdout, stderr)
	case "schemas":
		return schemas(args[1:], stdout, stderr)
	case "restore":
		return restore(args[1:], stdout, stderr)
	}
	if verb, ok := verbs[args[0]]; ok {
		return verb(&client{stdout: stdout, stderr: stderr, terminal: terminal()}, args[1:])
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

const certsUsage = `usage: esraft certs -cluster NAME -nodes n1,n2,n3 [-workers w1,w2] [-dir certs] [-hosts 127.0.0.1,localhost] [-days 365]

Makes, in -dir (created 0700; every file 0600):
  ca.pem, ca-key.pem          a development CA (kept if already there: new
                              node certificates are then signed by it)
  <id>.pem, <id>-key.pem      a certificate and key per node, naming it as
                              esraft://NAME/node/<id> (voters, -nodes) or
                              esraft://NAME/worker/<id> (workers, -workers)

Give a node -tls-cert <id>.pem -tls-key <id>-key.pem -tls-ca ca.pem and the
same -tls-cluster NAME. Keep ca-key.pem off the nodes. Running the command
again issues fresh node certificates from the same CA (rotation: the nodes
reload changed files by themselves).

Flags:
`

// terminal is where verbs ask for confirmation (tests replace it).
var terminal = stdinTerminal

// verbs are the commands over the admin API.
var verbs = map[string]func(c *client, args []string) error{
	"status": status, "cluster": cluster, "streams": streams, "partitions": partitions,
	"groups": groups, "parked": parked, "projections": projections, "scavenge": scavenge,
	"backup": backup, "keys": keys,
}

// localFlags is the flag set of a command that runs on this machine
// (certs, restore), printing usage and its flags to stderr.
func localFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

func certs(args []string, stdout, stderr io.Writer) error {
	fs := localFlags("certs", certsUsage, stderr)
	dir := fs.String("dir", "certs", "output directory")
	cluster := fs.String("cluster", "", "cluster name (required)")
	nodes := fs.String("nodes", "", "voter node IDs, comma-separated")
	workers := fs.String("workers", "", "worker (non-voter) node IDs, comma-separated")
	hosts := fs.String("hosts", "127.0.0.1,localhost", "DNS names and IPs added to every node certificate (informational: esraft checks the identity URI)")
	days := fs.Int("days", 365, "validity of node certificates, in days (the CA: 10 years)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("certs: unexpected argument %q", fs.Arg(0))
	}
	if !nodecert.ValidName(*cluster) {
		fs.Usage()
		return fmt.Errorf("certs: -cluster %q is not a valid name", *cluster)
	}
	var ids []nodecert.Identity
	seen := map[string]bool{}
	for _, l := range []struct {
		list string
		role nodecert.Role
	}{{*nodes, nodecert.Voter}, {*workers, nodecert.Worker}} {
		for _, id := range splitList(l.list) {
			if !nodecert.ValidName(id) || seen[id] {
				return fmt.Errorf("certs: node ID %q is invalid or repeated", id)
			}
			seen[id] = true
			ids = append(ids, nodecert.Identity{Cluster: *cluster, Role: l.role, NodeID: id})
		}
	}
	if len(ids) == 0 {
		fs.Usage()
		return errors.New("certs: no -nodes or -workers given")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	caFile, caKeyFile := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
	ca, err := nodecert.LoadCA(caFile, caKeyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if ca, err = nodecert.NewCA(*cluster, 10*365*24*time.Hour); err != nil {
			return err
		}
		key, err := ca.KeyPEM()
		if err != nil {
			return err
		}
		if err := nodecert.WriteFile(caKeyFile, key); err != nil {
			return err
		}
		if err := nodecert.WriteFile(caFile, ca.PEM); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "made CA %s (key %s: keep it off the nodes)\n", caFile, caKeyFile)
	case err != nil:
		return fmt.Errorf("certs: existing CA: %w", err)
	default:
		fmt.Fprintf(stdout, "using CA %s\n", caFile)
	}
	for _, id := range ids {
		cert, key, err := ca.Issue(id, time.Duration(*days)*24*time.Hour, splitList(*hosts)...)
		if err != nil {
			return err
		}
		certFile, keyFile := filepath.Join(*dir, id.NodeID+".pem"), filepath.Join(*dir, id.NodeID+"-key.pem")
		// The key first: a node polling its files reloads once both match.
		if err := nodecert.WriteFile(keyFile, key); err != nil {
			return err
		}
		if err := nodecert.WriteFile(certFile, cert); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s, %s\n", id, certFile, keyFile)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
