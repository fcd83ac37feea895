#!/bin/sh
# Starts a 3-node orders cluster on 127.0.0.1: cluster addresses :7001-7003,
# HTTP on :8081-8083, data in ./data-cluster/n1..n3, logs in ./data-cluster/n*.log.
# Stop it with Ctrl-C (every node stops gracefully). Kill one node with
#   kill -9 $(cat data-cluster/n2.pid)
# and start it again with the line this script prints for it.
set -eu
cd "$(dirname "$0")/../.."
mkdir -p data-cluster
go build -o data-cluster/orders ./examples/orders
PEERS=n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
pids=""
for i in 1 2 3; do
	set -- -data data-cluster/n$i -http 127.0.0.1:808$i -node n$i -addr 127.0.0.1:700$i -peers $PEERS
	echo "n$i: data-cluster/orders $*"
	data-cluster/orders "$@" >data-cluster/n$i.log 2>&1 &
	echo $! >data-cluster/n$i.pid
	pids="$pids $!"
done
trap 'kill $pids 2>/dev/null; wait' INT TERM
echo "HTTP on 127.0.0.1:8081, :8082, :8083. Ctrl-C stops the cluster."
wait
