// Package certs mints the certificates of a Flotilla cluster: its CA,
// node certificates naming flotilla://<cluster-id>/node/<id>, client
// certificates naming a client and its roles
// (flotilla://<cluster-id>/client/<name>, flotilla://<cluster-id>/role/<role>),
// and revocation lists. `flotilla cert` is its command line; tests mint
// their certificates with it too, so the recipe the README gives is the
// one the tests run.
//
// Keys are ECDSA P-256; serial numbers are random 128-bit numbers.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// NodeURI names a node; ClientURI a client; RoleURI grants a role.
func NodeURI(clusterID, node uint64) string {
	return fmt.Sprintf("flotilla://%d/node/%d", clusterID, node)
}

// ClientURI is the URI SAN that names a client.
func ClientURI(clusterID uint64, name string) string {
	return fmt.Sprintf("flotilla://%d/client/%s", clusterID, url.PathEscape(name))
}

// RoleURI is the URI SAN that grants a client role (read, produce, admin).
func RoleURI(clusterID uint64, role string) string {
	return fmt.Sprintf("flotilla://%d/role/%s", clusterID, role)
}

// Roles are the client roles a certificate may grant.
var Roles = []string{"read", "produce", "admin"}

// Pair is a certificate and its key.
type Pair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CA is a cluster's certificate authority.
type CA struct {
	Pair
	ClusterID uint64
}

// NewCA makes a CA for a cluster, valid for the given time.
func NewCA(clusterID uint64, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: fmt.Sprintf("flotilla cluster %d CA", clusterID)},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	p, err := sign(tmpl, key, nil, validity)
	if err != nil {
		return nil, err
	}
	return &CA{Pair: *p, ClusterID: clusterID}, nil
}

// Node mints a node's certificate: it serves peers and clients and
// calls peers.
func (ca *CA) Node(id uint64, validity time.Duration) (*Pair, error) {
	u, err := url.Parse(NodeURI(ca.ClusterID, id))
	if err != nil {
		return nil, err
	}
	return ca.leaf(u.String(), []*url.URL{u}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, validity)
}

// Client mints a client's certificate, with the roles it grants.
func (ca *CA) Client(name string, roles []string, validity time.Duration) (*Pair, error) {
	if name == "" {
		return nil, errors.New("certs: a client needs a name")
	}
	uris := []string{ClientURI(ca.ClusterID, name)}
	for _, r := range roles {
		known := false
		for _, k := range Roles {
			known = known || r == k
		}
		if !known {
			return nil, fmt.Errorf("certs: unknown role %q (roles: %v)", r, Roles)
		}
		uris = append(uris, RoleURI(ca.ClusterID, r))
	}
	var us []*url.URL
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		us = append(us, u)
	}
	return ca.leaf(name, us, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, validity)
}

func (ca *CA) leaf(cn string, uris []*url.URL, usage []x509.ExtKeyUsage, validity time.Duration) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, URIs: uris, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage}
	return sign(tmpl, key, &ca.Pair, validity)
}

// sign fills in serial and validity and signs tmpl (self-signed if
// parent is nil).
func sign(tmpl *x509.Certificate, key crypto.Signer, parent *Pair, validity time.Duration) (*Pair, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-5 * time.Minute) // clocks differ a little
	tmpl.NotAfter = time.Now().Add(validity)
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("certs: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Pair{Cert: cert, Key: key}, nil
}

// CRL makes a revocation list of the given serial numbers, signed by the
// CA, due for its next update after validity.
func (ca *CA) CRL(serials []*big.Int, validity time.Duration) ([]byte, error) {
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	number, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: number, ThisUpdate: time.Now(),
		NextUpdate: time.Now().Add(validity), RevokedCertificateEntries: entries}, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// TLS is the pair as a tls.Certificate.
func (p *Pair) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}
}

// Pool is a pool holding the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Write writes the pair to dir as <name>.pem and <name>-key.pem (the key
// readable by its owner only).
func (p *Pair) Write(dir, name string) error {
	der, err := x509.MarshalPKCS8PrivateKey(p.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// ReadPair reads a pair written by Write.
func ReadPair(dir, name string) (*Pair, error) {
	c, err := ReadCert(filepath.Join(dir, name+".pem"))
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("certs: %s-key.pem: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s-key.pem: %w", name, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: %s-key.pem: not a signing key", name)
	}
	return &Pair{Cert: c, Key: signer}, nil
}

// ReadCert reads a PEM certificate.
func ReadCert(file string) (*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certs: %s: no PEM certificate", file)
	}
	return x509.ParseCertificate(block.Bytes)
}
