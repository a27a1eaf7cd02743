package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsgate/wsgate/internal/localca"
)

// genTLS is `wsgate-demo -gen-tls DIR` (make run TLS=1): a local CA and an ECDSA P-256 certificate
// for names, as DIR/ca.pem, DIR/cert.pem and DIR/key.pem. Files that are there and still valid
// for a day are kept, so a browser told to trust ca.pem once keeps trusting it across runs. It
// prints the leaf's SPKI hash (Chromium's --ignore-certificate-errors-spki-list) as "spki=...".
func genTLS(dir, names string, out io.Writer) error {
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if pair, err := tls.LoadX509KeyPair(cert, key); err == nil && pair.Leaf != nil && time.Until(pair.Leaf.NotAfter) > 24*time.Hour {
		if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
			sum := sha256.Sum256(pair.Leaf.RawSubjectPublicKeyInfo)
			fmt.Fprintf(out, "spki=%s\n", base64.StdEncoding.EncodeToString(sum[:]))
			return nil
		}
	}
	list := strings.Split(names, ",")
	f, err := localca.WriteFiles(dir, 90*24*time.Hour, list...)
	if err != nil {
		return fmt.Errorf("-gen-tls %s: %w", dir, err)
	}
	fmt.Fprintf(out, "spki=%s\n", f.SPKIHash)
	return nil
}
