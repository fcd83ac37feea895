// Package nodecert defines how a node's identity is bound into its
// certificate, and makes development certificate authorities and node
// certificates with the standard library only.
//
// # Identity
//
// A node certificate carries exactly one URI subject alternative name
//
//	esraft://<cluster>/node/<node-id>     a voter
//	esraft://<cluster>/worker/<node-id>   a worker (non-voter)
//
// Cluster names and node IDs are path segments: non-empty, no "/". The
// same certificate serves as both a TLS server and a TLS client
// certificate (extended key usages serverAuth and clientAuth).
package nodecert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Scheme is the URI scheme of node identities.
const Scheme = "esraft"

// Role is what a certificate lets a node be.
type Role string

const (
	Voter  Role = "node"   // may be a voter (or a non-voter)
	Worker Role = "worker" // may only ever be a non-voter
)

// Identity is a node's verified identity.
type Identity struct {
	Cluster string
	Role    Role
	NodeID  string
}

// URI is the identity's SAN URI.
func (id Identity) URI() string {
	return (&url.URL{Scheme: Scheme, Host: id.Cluster, Path: "/" + string(id.Role) + "/" + id.NodeID}).String()
}

func (id Identity) String() string { return id.URI() }

// ErrNoIdentity is returned by Parse for a certificate that names no node
// of the cluster, or more than one.
var ErrNoIdentity = errors.New("nodecert: certificate carries no node identity")

// Parse returns the node identity cert carries for cluster.
func Parse(cert *x509.Certificate, cluster string) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != Scheme {
			continue
		}
		id, ok := parseURI(u)
		if !ok {
			return Identity{}, fmt.Errorf("%w: malformed %q", ErrNoIdentity, u)
		}
		found = append(found, id)
	}
	switch {
	case len(found) == 0:
		return Identity{}, ErrNoIdentity
	case len(found) > 1:
		return Identity{}, fmt.Errorf("%w: %d identities in one certificate", ErrNoIdentity, len(found))
	case found[0].Cluster != cluster:
		return Identity{}, fmt.Errorf("%w: %s is not of cluster %q", ErrNoIdentity, found[0], cluster)
	}
	return found[0], nil
}

func parseURI(u *url.URL) (Identity, bool) {
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Identity{}, false
	}
	role, id, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok || id == "" || strings.Contains(id, "/") || (Role(role) != Voter && Role(role) != Worker) {
		return Identity{}, false
	}
	return Identity{Cluster: u.Host, Role: Role(role), NodeID: id}, true
}

// ValidName reports whether s can be a cluster name or node ID.
func ValidName(s string) bool {
	if s == "" || strings.ContainsAny(s, "/?#@:% ") {
		return false
	}
	u, err := url.Parse("esraft://" + s + "/node/x")
	return err == nil && u.Host == s
}

// CA is a development certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // the certificate, PEM encoded
}

// NewCA makes a self-signed CA for cluster, valid for validity.
func NewCA(cluster string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "esraft CA " + cluster},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("nodecert: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// KeyPEM is the CA's private key, PEM encoded.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// LoadCA reads a CA written by WriteFiles.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, fmt.Errorf("nodecert: %s or %s is not PEM", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: cb}, nil
}

// Issue makes a certificate and key for id, signed by ca, valid for
// validity; hosts (DNS names or IP addresses) are added as SANs for tools
// that check them (esraft itself checks the identity URI).
func (ca *CA) Issue(id Identity, validity time.Duration, hosts ...string) (cert, key []byte, err error) {
	if !ValidName(id.Cluster) || !ValidName(id.NodeID) || (id.Role != Voter && id.Role != Worker) {
		return nil, nil, fmt.Errorf("nodecert: invalid identity %+v", id)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	u, _ := url.Parse(id.URI())
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id.NodeID},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &priv.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("nodecert: %w", err)
	}
	if key, err = keyPEM(priv); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key, nil
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	b, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// WriteFile writes b to path, readable by its owner only, replacing any
// file there atomically (a reader polling path never sees half a file).
func WriteFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
