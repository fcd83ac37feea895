#!/bin/sh
# Starts a 3-node orders cluster on 127.0.0.1 with mutual TLS on the cluster
# ports: cluster addresses :7001-7003, HTTP on :8081-8083, data in
# ./data-cluster/n1..n3, logs in ./data-cluster/n*.log, certificates in
# ./data-cluster/certs (made once by `esraft certs`; see SECURITY.md).
# Stop it with Ctrl-C (every node stops gracefully). Kill one node with
#   kill -9 $(cat data-cluster/n2.pid)
# and start it again with the line this script prints for it.
# TLS=off runs the cluster ports in plaintext (development only).
set -eu
cd "$(dirname "$0")/../.."
mkdir -p data-cluster
chmod 700 data-cluster
go build -o data-cluster/orders ./examples/orders
go build -o data-cluster/esraft ./cmd/esraft
CERTS=data-cluster/certs
if [ "${TLS:-on}" != off ] && [ ! -f $CERTS/ca.pem ]; then
	data-cluster/esraft certs -dir $CERTS -cluster orders -nodes n1,n2,n3 -workers w1
fi
PEERS=n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
pids=""
for i in 1 2 3; do
	set -- -data data-cluster/n$i -http 127.0.0.1:808$i -node n$i -addr 127.0.0.1:700$i -peers $PEERS
	if [ "${TLS:-on}" != off ]; then
		set -- "$@" -tls-cluster orders -tls-cert $CERTS/n$i.pem -tls-key $CERTS/n$i-key.pem -tls-ca $CERTS/ca.pem
	fi
	echo "n$i: data-cluster/orders $*"
	data-cluster/orders "$@" >data-cluster/n$i.log 2>&1 &
	echo $! >data-cluster/n$i.pid
	pids="$pids $!"
done
trap 'kill $pids 2>/dev/null; wait' INT TERM
echo "HTTP on 127.0.0.1:8081, :8082, :8083. Ctrl-C stops the cluster."
if [ "${TLS:-on}" != off ]; then
	echo "A worker: data-cluster/orders -data data-cluster/w1 -http 127.0.0.1:8084 -node w1 -addr 127.0.0.1:7004 -join 127.0.0.1:7001 -worker -tls-cluster orders -tls-cert $CERTS/w1.pem -tls-key $CERTS/w1-key.pem -tls-ca $CERTS/ca.pem"
fi
wait
