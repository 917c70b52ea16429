package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/flotilla-io/flotilla/internal/certs"
	"github.com/flotilla-io/flotilla/transport"
)

// Client authorization.
//
// With mutual TLS, a client's certificate names it and its roles as URI
// SANs: flotilla://<cluster-id>/client/<name> and one
// flotilla://<cluster-id>/role/<role> per role (names of another cluster
// count for nothing). Every call needs a role: fetch, describe and list
// need read, produce needs produce, and creating, deleting, moving
// leadership and changing replicas need admin. The check runs before the
// request is read (the server's tap), against the TLS config in force at
// the call (a certificate revoked since the connection opened is refused
// at its next call). Refusals are PERMISSION_DENIED naming the missing
// role, counted in flotilla_client_denied_total and logged (at most once
// a second). A node's own certificate carries no client role.
//
// Without TLS nothing is authenticated: every caller has every role, and
// the node says so at start.

// Role is a client role.
type Role string

// The roles.
const (
	RoleRead    Role = "read"
	RoleProduce Role = "produce"
	RoleAdmin   Role = "admin"
)

var roles = []Role{RoleRead, RoleProduce, RoleAdmin}

// methodRoles is the role each client API method needs.
var methodRoles = map[string]Role{
	"/flotilla.client.v1.Partitions/Fetch":              RoleRead,
	"/flotilla.client.v1.Partitions/DescribePartition":  RoleRead,
	"/flotilla.client.v1.Partitions/ListPartitions":     RoleRead,
	"/flotilla.client.v1.Partitions/Produce":            RoleProduce,
	"/flotilla.client.v1.Partitions/CreatePartition":    RoleAdmin,
	"/flotilla.client.v1.Partitions/DeletePartition":    RoleAdmin,
	"/flotilla.client.v1.Partitions/AlterPartition":     RoleAdmin,
	"/flotilla.client.v1.Partitions/TransferLeadership": RoleAdmin,
	"/flotilla.client.v1.Partitions/ChangeReplicas":     RoleAdmin,
}

// identity is who a caller is and what it may do.
type identity struct {
	name  string // "" without TLS or without a client URI
	roles map[Role]bool
}

// anonymous is every caller of a node without TLS.
var anonymous = identity{roles: map[Role]bool{RoleRead: true, RoleProduce: true, RoleAdmin: true}}

// identityOf reads a client certificate's name and roles.
func identityOf(cert *x509.Certificate, clusterID uint64) identity {
	id := identity{roles: map[Role]bool{}}
	cluster := strconv.FormatUint(clusterID, 10)
	for _, u := range cert.URIs {
		if u.Scheme != "flotilla" || u.Host != cluster {
			continue
		}
		kind, value, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if !ok || value == "" {
			continue
		}
		switch kind {
		case "client":
			id.name = value
		case "role":
			for _, r := range roles {
				if string(r) == value {
					id.roles[r] = true
				}
			}
		}
	}
	return id
}

// authorizer checks callers of the client API.
type authorizer struct {
	clusterID uint64
	tls       func() *transport.TLSConfig // nil result: plaintext
	denied    *prometheus.CounterVec      // method, role
	log       func(msg string, args ...any)
	sometimes rate.Sometimes

	// Verified identities by certificate, for the TLS config they were
	// checked against: a connection's calls share its certificate.
	mu struct {
		sync.Mutex
		cfg   *transport.TLSConfig
		known map[*x509.Certificate]identity
	}
}

// maxKnownCerts bounds the cache of verified certificates.
const maxKnownCerts = 4096

// authorize returns the caller's identity if it has the role method
// needs, or a PERMISSION_DENIED status.
func (a *authorizer) authorize(ctx context.Context, method string) (identity, error) {
	need, ok := methodRoles[method]
	if !ok {
		// Nothing else is served here; refused before anything is read.
		return identity{}, status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	cfg := a.tls()
	if cfg == nil {
		return anonymous, nil
	}
	id, err := a.identify(ctx, cfg)
	if err == nil && !id.roles[need] {
		who := "the client"
		if id.name != "" {
			who = fmt.Sprintf("client %q", id.name)
		}
		err = fmt.Errorf("%s lacks role %q, which %s needs (a certificate grants it with the URI SAN %s)",
			who, need, method, certs.RoleURI(a.clusterID, string(need)))
	}
	if err != nil {
		a.denied.WithLabelValues(method, string(need)).Inc()
		a.sometimes.Do(func() { a.log("refused a client call", "method", method, "client", id.name, "err", err) })
		return identity{}, status.Error(codes.PermissionDenied, err.Error())
	}
	return id, nil
}

// identify verifies the caller's certificate against cfg (once per
// certificate and config) and reads its identity.
func (a *authorizer) identify(ctx context.Context, cfg *transport.TLSConfig) (identity, error) {
	p, _ := peer.FromContext(ctx)
	var chain []*x509.Certificate
	if p != nil {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			chain = info.State.PeerCertificates
		}
	}
	if len(chain) == 0 {
		return identity{}, fmt.Errorf("no client certificate")
	}
	a.mu.Lock()
	if a.mu.cfg != cfg || len(a.mu.known) >= maxKnownCerts {
		a.mu.cfg, a.mu.known = cfg, make(map[*x509.Certificate]identity)
	}
	id, ok := a.mu.known[chain[0]]
	a.mu.Unlock()
	if ok {
		return id, nil
	}
	leaf, err := cfg.VerifyPeer(chain, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return identity{}, err
	}
	id = identityOf(leaf, a.clusterID)
	a.mu.Lock()
	if a.mu.cfg == cfg {
		a.mu.known[chain[0]] = id
	}
	a.mu.Unlock()
	return id, nil
}
