package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/internal/certs"
)

// certCmd mints a cluster's certificates into a directory.
func certCmd() *cobra.Command {
	var (
		clusterID uint64
		dir       string
		validity  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Mint a cluster's certificates: its CA, nodes, clients with roles, revocations",
		Long: `Mints the certificates mutual TLS needs, into --dir (PEM files; keys
readable by their owner only):

  flotilla cert ca      --cluster-id 1 --dir certs               # ca.pem, ca-key.pem
  flotilla cert node    --cluster-id 1 --dir certs --id 1        # node-1.pem, node-1-key.pem
  flotilla cert client  --cluster-id 1 --dir certs --name alice --role read --role produce
                                                                 # client-alice.pem, client-alice-key.pem
  flotilla cert revoke  --cluster-id 1 --dir certs node-4.pem    # adds to crl.pem

A node runs with --tls-cert certs/node-1.pem --tls-key certs/node-1-key.pem
--tls-ca certs/ca.pem [--tls-crl certs/crl.pem]; a client with its own pair
and the CA. Roles: read (fetch, describe, list), produce, admin (create,
delete, transfer, change replicas). Keep ca-key.pem offline.`,
	}
	p := cmd.PersistentFlags()
	p.Uint64Var(&clusterID, "cluster-id", 1, "the cluster the certificates are for")
	p.StringVar(&dir, "dir", "certs", "directory of the CA and the certificates")
	p.DurationVar(&validity, "validity", 365*24*time.Hour, "how long a certificate (or the revocation list) is valid")
	loadCA := func() (*certs.CA, error) {
		p, err := certs.ReadPair(dir, "ca")
		if err != nil {
			return nil, fmt.Errorf("the CA (run 'flotilla cert ca' first): %w", err)
		}
		return &certs.CA{Pair: *p, ClusterID: clusterID}, nil
	}
	written := func(c *cobra.Command, name string) {
		fmt.Fprintf(c.OutOrStdout(), "wrote %s and %s\n", filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	}

	ca := &cobra.Command{Use: "ca", Short: "Make the cluster's CA", Args: cobra.NoArgs, RunE: func(c *cobra.Command, _ []string) error {
		if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
			return fmt.Errorf("%s already holds a CA: remove it first to make another", dir)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		ca, err := certs.NewCA(clusterID, 10*validity)
		if err != nil {
			return err
		}
		if err := ca.Write(dir, "ca"); err != nil {
			return err
		}
		written(c, "ca")
		return nil
	}}

	var id uint64
	node := &cobra.Command{Use: "node", Short: "Mint a node's certificate", Args: cobra.NoArgs, RunE: func(c *cobra.Command, _ []string) error {
		if id == 0 {
			return fmt.Errorf("--id: a node ID (non-zero) is required")
		}
		ca, err := loadCA()
		if err != nil {
			return err
		}
		pair, err := ca.Node(id, validity)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("node-%d", id)
		if err := pair.Write(dir, name); err != nil {
			return err
		}
		written(c, name)
		return nil
	}}
	node.Flags().Uint64Var(&id, "id", 0, "the node's ID")

	var name string
	var roles []string
	client := &cobra.Command{Use: "client", Short: "Mint a client's certificate with its roles", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ca, err := loadCA()
			if err != nil {
				return err
			}
			pair, err := ca.Client(name, roles, validity)
			if err != nil {
				return err
			}
			file := "client-" + name
			if err := pair.Write(dir, file); err != nil {
				return err
			}
			written(c, file)
			return nil
		}}
	client.Flags().StringVar(&name, "name", "", "the client's name (in logs, refusals and quotas)")
	client.Flags().StringArrayVar(&roles, "role", nil, "a role it has: read, produce or admin (repeat for several)")

	revoke := &cobra.Command{Use: "revoke CERT.pem...", Short: "Revoke certificates: add them to the CA's revocation list (crl.pem)",
		Args: cobra.MinimumNArgs(1), RunE: func(c *cobra.Command, args []string) error {
			ca, err := loadCA()
			if err != nil {
				return err
			}
			crlFile := filepath.Join(dir, "crl.pem")
			var serials []*big.Int
			switch b, err := os.ReadFile(crlFile); { // keep what was revoked before
			case err == nil:
				if block, _ := pem.Decode(b); block != nil {
					b = block.Bytes
				}
				old, err := x509.ParseRevocationList(b)
				if err != nil {
					return fmt.Errorf("%s: %w (it must stay readable: what it revokes would be revoked no more)", crlFile, err)
				}
				for _, e := range old.RevokedCertificateEntries {
					serials = append(serials, e.SerialNumber)
				}
			case !os.IsNotExist(err):
				return err
			}
			for _, f := range args {
				cert, err := certs.ReadCert(f)
				if err != nil {
					return err
				}
				serials = append(serials, cert.SerialNumber)
			}
			crl, err := ca.CRL(serials, validity)
			if err != nil {
				return err
			}
			if err := os.WriteFile(crlFile, crl, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s (%d revoked); send the nodes SIGHUP to apply it\n", crlFile, len(serials))
			return nil
		}}
	cmd.AddCommand(ca, node, client, revoke)
	return cmd
}
