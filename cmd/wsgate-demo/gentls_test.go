package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -gen-tls writes a CA and a certificate for the names that verifies against it, and keeps them
// across runs (the same SPKI hash), so a browser told to trust the CA once keeps trusting it.
func TestGenTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	var out1, out2 bytes.Buffer
	if err := genTLS(dir, "localhost,127.0.0.1", &out1); err != nil {
		t.Fatal(err)
	}
	if err := genTLS(dir, "localhost,127.0.0.1", &out2); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out1.String(), "spki=") || out1.String() != out2.String() {
		t.Fatalf("spki lines %q then %q: want the same certificate kept", out1.String(), out2.String())
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Fatalf("certificate for %s does not verify against ca.pem: %v", name, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "key.pem")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem mode %v, want 0600", fi.Mode().Perm())
	}
}
