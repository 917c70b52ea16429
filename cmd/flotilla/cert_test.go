package main

import (
	"bytes"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flotilla-io/flotilla/internal/certs"
	"github.com/flotilla-io/flotilla/transport"
)

// TestCertCommand: the README's recipe mints a CA, a node certificate a
// node loads, a client certificate with its name and roles, and a
// revocation list a node loads and applies.
func TestCertCommand(t *testing.T) {
	dir := t.TempDir()
	cert := func(args ...string) {
		t.Helper()
		cmd := certCmd()
		cmd.SetArgs(append(args, "--cluster-id", "3", "--dir", dir))
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("flotilla cert %v: %v\n%s", args, err, out.String())
		}
	}
	cert("ca")
	cert("node", "--id", "2")
	cert("client", "--name", "alice", "--role", "read", "--role", "produce")
	f := transport.TLSFiles{Cert: filepath.Join(dir, "node-2.pem"), Key: filepath.Join(dir, "node-2-key.pem"), CA: filepath.Join(dir, "ca.pem")}
	node, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(node.Certificate.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.VerifyPeer([]*x509.Certificate{leaf}, x509.ExtKeyUsageServerAuth); err != nil || leaf.URIs[0].String() != transport.NodeURI(3, 2) {
		t.Fatalf("node certificate: %v, %v", leaf.URIs, err)
	}
	alice, err := certs.ReadCert(filepath.Join(dir, "client-alice.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, u := range alice.URIs {
		uris = append(uris, u.String())
	}
	if want := []string{"flotilla://3/client/alice", "flotilla://3/role/read", "flotilla://3/role/produce"}; !slices.Equal(uris, want) {
		t.Fatalf("client URIs %v, want %v", uris, want)
	}
	if _, err := node.VerifyPeer([]*x509.Certificate{alice}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("the client's certificate: %v", err)
	}
	cert("revoke", filepath.Join(dir, "client-alice.pem"))
	f.CRL = filepath.Join(dir, "crl.pem")
	revoked, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := revoked.VerifyPeer([]*x509.Certificate{alice}, x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("a revoked client certificate verified")
	}
	if _, err := revoked.VerifyPeer([]*x509.Certificate{leaf}, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("the node's certificate after revoking another: %v", err)
	}
	// A revocation list it cannot read is not replaced by one that
	// forgets what it revoked.
	if err := os.WriteFile(f.CRL, []byte("not a CRL"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := certCmd()
	cmd.SetArgs([]string{"revoke", filepath.Join(dir, "node-2.pem"), "--cluster-id", "3", "--dir", dir})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err == nil {
		t.Fatal("revoke replaced an unreadable revocation list")
	}
}
