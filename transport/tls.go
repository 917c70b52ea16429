package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// Mutual TLS.
//
// Every node has a certificate from the cluster's CA naming it with a URI
// SAN flotilla://<cluster-id>/node/<node-id>. A server accepts a call only
// from a client whose certificate the CA signed and did not revoke
// (checked in the TLS handshake and again per call, against the CA and
// revocation list in force then) and that names the node its handshake
// claims, a node of the current peer set (checked per call); a client
// accepts a server only if its certificate names the node it dialled.
// Host names play no part: nodes are known by ID.
//
// The certificate, the CA and the revocation list can be replaced while
// the transport runs (GRPC.SetTLS): new handshakes use the new ones, and
// every open stream is checked again before its next frame.

// TLSConfig is a node's certificate, the cluster's CA, and the
// certificates the CA signed that are refused anyway.
type TLSConfig struct {
	Certificate tls.Certificate
	CA          *x509.CertPool
	// Revoked holds the serial numbers (in decimal) of revoked
	// certificates: a retired node's, a lost client's. Nil: none.
	Revoked map[string]bool
}

// NodeURI is the URI SAN that names a node in its certificate.
func NodeURI(clusterID uint64, node NodeID) string {
	return fmt.Sprintf("flotilla://%d/node/%d", clusterID, node)
}

// TLSFiles names the PEM files a TLSConfig is read from.
type TLSFiles struct {
	Cert, Key, CA string
	// CRL, if set, is a certificate revocation list (PEM or DER) signed
	// by the CA.
	CRL string
}

// LoadTLSConfig reads a PEM certificate, its key and the CA certificate.
func LoadTLSConfig(certFile, keyFile, caFile string) (*TLSConfig, error) {
	return TLSFiles{Cert: certFile, Key: keyFile, CA: caFile}.Load()
}

// Load reads the files.
func (f TLSFiles) Load() (*TLSConfig, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("transport: TLS key pair: %w", err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("transport: TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	for rest := caPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && block.Type == "CERTIFICATE" {
			pool.AddCert(c)
			cas = append(cas, c)
		}
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("transport: TLS CA %s: no certificate found", f.CA)
	}
	c := &TLSConfig{Certificate: cert, CA: pool}
	if f.CRL != "" {
		if c.Revoked, err = loadCRL(f.CRL, cas); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// loadCRL reads a revocation list that one of the CAs signed and is not
// out of date, and returns its serial numbers.
func loadCRL(file string, cas []*x509.Certificate) (map[string]bool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("transport: CRL: %w", err)
	}
	if block, _ := pem.Decode(b); block != nil {
		b = block.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, fmt.Errorf("transport: CRL %s: %w", file, err)
	}
	signed := false
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			signed = true
			break
		}
	}
	switch {
	case !signed:
		return nil, fmt.Errorf("transport: CRL %s is not signed by the CA", file)
	case !crl.NextUpdate.IsZero() && time.Now().After(crl.NextUpdate):
		return nil, fmt.Errorf("transport: CRL %s is out of date (next update was due %s)", file, crl.NextUpdate.Format(time.RFC3339))
	}
	revoked := make(map[string]bool, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		revoked[e.SerialNumber.String()] = true
	}
	return revoked, nil
}

// VerifyPeer checks a peer's certificate chain against the CA, for the
// given use, and that it is not revoked; it returns the leaf.
func (c *TLSConfig) VerifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("transport: peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.CA, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, fmt.Errorf("transport: peer certificate: %w", err)
	}
	if c.Revoked[leaf.SerialNumber.String()] {
		return nil, fmt.Errorf("transport: peer certificate %s (serial %s) is revoked", leaf.Subject, leaf.SerialNumber)
	}
	return leaf, nil
}

// ServerCredentials are the credentials of a server of this node (the
// peer server, the reference node's client server): it presents the
// current certificate and requires a client certificate that the current
// CA signed and did not revoke. current is called at every handshake.
func ServerCredentials(current func() *TLSConfig) credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		// Replaced per handshake: the certificate, the CA and the
		// revocation list may change while the node runs.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := current()
			return &tls.Config{
				Certificates: []tls.Certificate{c.Certificate},
				ClientCAs:    c.CA,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				MinVersion:   tls.VersionTLS13,
				NextProtos:   []string{"h2"},
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) > 0 && c.Revoked[cs.PeerCertificates[0].SerialNumber.String()] {
						return fmt.Errorf("transport: client certificate (serial %s) is revoked", cs.PeerCertificates[0].SerialNumber)
					}
					return nil
				},
			}, nil
		},
	})
}

// clientCreds accepts only the server whose certificate names node to.
func clientCreds(current func() *TLSConfig, clusterID uint64, to NodeID) credentials.TransportCredentials {
	want := NodeURI(clusterID, to)
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &current().Certificate, nil
		},
		// The chain and the node's URI are checked below; host names are
		// not how nodes are known.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := current().VerifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			return hasURI(leaf, want)
		},
	})
}

// ClientCredentials are the credentials of a client of the cluster's
// nodes: it presents its certificate and accepts any node of the cluster
// whose certificate the CA signed.
func (c *TLSConfig) ClientCredentials(clusterID uint64) credentials.TransportCredentials {
	prefix := fmt.Sprintf("flotilla://%d/node/", clusterID)
	return credentials.NewTLS(&tls.Config{
		Certificates:       []tls.Certificate{c.Certificate},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the chain and the URI are checked below
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := c.VerifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			for _, u := range leaf.URIs {
				if strings.HasPrefix(u.String(), prefix) {
					return nil
				}
			}
			return fmt.Errorf("transport: certificate names no node of cluster %d", clusterID)
		},
	})
}

// namedNodes returns the nodes of a cluster a certificate names.
func namedNodes(cert *x509.Certificate, clusterID uint64) []NodeID {
	prefix := fmt.Sprintf("flotilla://%d/node/", clusterID)
	var ids []NodeID
	for _, u := range cert.URIs {
		if rest, ok := strings.CutPrefix(u.String(), prefix); ok {
			if id, err := strconv.ParseUint(rest, 10, 64); err == nil && id != 0 {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// hasURI checks that a certificate names uri among its URI SANs.
func hasURI(cert *x509.Certificate, uri string) error {
	for _, u := range cert.URIs {
		if u.String() == uri {
			return nil
		}
	}
	return fmt.Errorf("certificate does not name %s", uri)
}

// CountingCreds reports server-side TLS handshake failures (no
// certificate, a certificate from another CA, a revoked one), which never
// reach a call, and successes: Authenticated, if set, is given the
// connection and the peer's certificate (a server marks in its
// LimitedListener the connections of those it serves, which are then no
// longer ones to close to make room).
type CountingCreds struct {
	credentials.TransportCredentials
	Fail          func(error)
	Authenticated func(net.Conn, *x509.Certificate)
}

// ServerHandshake counts a failed handshake.
func (c CountingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ServerHandshake(conn)
	switch {
	case err != nil:
		c.Fail(err)
	case c.Authenticated != nil:
		if tlsInfo, ok := info.(credentials.TLSInfo); ok && len(tlsInfo.State.PeerCertificates) > 0 {
			c.Authenticated(conn, tlsInfo.State.PeerCertificates[0])
		}
	}
	return nc, info, err
}

// ClientHandshake is the wrapped credentials'.
func (c CountingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

// Clone clones the wrapped credentials.
func (c CountingCreds) Clone() credentials.TransportCredentials {
	return CountingCreds{TransportCredentials: c.TransportCredentials.Clone(), Fail: c.Fail, Authenticated: c.Authenticated}
}
