package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
)

// Mutual TLS.
//
// Every node has a certificate from the cluster's CA naming it with a URI
// SAN flotilla://<cluster-id>/node/<node-id>. A server accepts a call only
// from a client whose certificate the CA signed (checked in the TLS
// handshake) and that names the node its handshake claims (checked per
// call); a client accepts a server only if its certificate names the node
// it dialled. Host names play no part: nodes are known by ID.

// TLSConfig is a node's certificate and the cluster's CA.
type TLSConfig struct {
	Certificate tls.Certificate
	CA          *x509.CertPool
}

// NodeURI is the URI SAN that names a node in its certificate.
func NodeURI(clusterID uint64, node NodeID) string {
	return fmt.Sprintf("flotilla://%d/node/%d", clusterID, node)
}

// LoadTLSConfig reads a PEM certificate, its key and the CA certificate.
func LoadTLSConfig(certFile, keyFile, caFile string) (*TLSConfig, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: TLS key pair: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("transport: TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("transport: TLS CA %s: no certificate found", caFile)
	}
	return &TLSConfig{Certificate: cert, CA: pool}, nil
}

func (c *TLSConfig) serverCreds() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{c.Certificate},
		ClientCAs:    c.CA,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})
}

// clientCreds accepts only the server whose certificate names node to.
func (c *TLSConfig) clientCreds(clusterID uint64, to NodeID) credentials.TransportCredentials {
	want := NodeURI(clusterID, to)
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{c.Certificate},
		MinVersion:   tls.VersionTLS13,
		// The chain and the node's URI are checked below; host names are
		// not how nodes are known.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := c.verifyChain(cs, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			return hasURI(leaf, want)
		},
	})
}

// ClientCredentials are the credentials of a client of the cluster's
// nodes (the reference node's client API shares the peer port): it
// presents its certificate and accepts any node of the cluster whose
// certificate the CA signed.
func (c *TLSConfig) ClientCredentials(clusterID uint64) credentials.TransportCredentials {
	prefix := fmt.Sprintf("flotilla://%d/node/", clusterID)
	return credentials.NewTLS(&tls.Config{
		Certificates:       []tls.Certificate{c.Certificate},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the chain and the URI are checked below
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := c.verifyChain(cs, x509.ExtKeyUsageServerAuth)
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

// verifyChain checks the peer's certificate chain against the CA.
func (c *TLSConfig) verifyChain(cs tls.ConnectionState, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("transport: peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.CA, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, fmt.Errorf("transport: peer certificate: %w", err)
	}
	return leaf, nil
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

// countingCreds reports server-side TLS handshake failures (no
// certificate, a certificate from another CA), which never reach a call.
type countingCreds struct {
	credentials.TransportCredentials
	fail func(error)
}

func (c countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.fail(err)
	}
	return nc, info, err
}

func (c countingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

func (c countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{TransportCredentials: c.TransportCredentials.Clone(), fail: c.fail}
}
