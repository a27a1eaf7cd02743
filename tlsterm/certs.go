package tlsterm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// CertPair names a certificate chain file and its private key file (PEM).
type CertPair struct {
	CertFile, KeyFile string
}

// CertStore holds the certificates of a listener, chosen by SNI among the
// DNS names they carry (exact names first, then one-label wildcards such as
// *.example.com); the first pair is the default for clients without SNI or
// with a name no certificate has. Reload re-reads the same files and swaps
// the whole set atomically, or keeps the old one when any file is bad;
// Replace swaps in another store's files and certificates (a reload that
// checks everything before it applies anything); established connections
// never look at it again.
type CertStore struct {
	cur atomic.Pointer[certSet]
}

// certSet is what a store serves: the files with what they held when read,
// swapped as one.
type certSet struct {
	pairs []CertPair
	certs []*tls.Certificate
	exact map[string]*tls.Certificate
	wild  map[string]*tls.Certificate // "example.com" for *.example.com
}

// LoadCerts reads every pair. The error names the file at fault.
func LoadCerts(pairs ...CertPair) (*CertStore, error) {
	if len(pairs) == 0 {
		return nil, errors.New("tlsterm: no certificate/key pair")
	}
	set, err := loadSet(append([]CertPair(nil), pairs...))
	if err != nil {
		return nil, err
	}
	s := &CertStore{}
	s.cur.Store(set)
	return s, nil
}

// Reload re-reads the files. On error the certificates in use stay.
func (s *CertStore) Reload() error {
	set, err := loadSet(s.cur.Load().pairs)
	if err != nil {
		return err
	}
	s.cur.Store(set)
	return nil
}

// Replace makes s serve what next was loaded with (its files and the
// certificates read from them) in one atomic swap. A caller that reloads
// more than certificates reads them with LoadCerts first, checks the rest,
// and replaces only when everything is good. next must not be reloaded
// afterwards (the two stores share the set).
func (s *CertStore) Replace(next *CertStore) {
	s.cur.Store(next.cur.Load())
}

// Pairs returns the files the certificates in use were read from.
func (s *CertStore) Pairs() []CertPair {
	return append([]CertPair(nil), s.cur.Load().pairs...)
}

// SameCertificates reports whether s and other serve the same chains
// (byte for byte, in the same order): a reload that re-read unchanged files
// changed nothing.
func (s *CertStore) SameCertificates(other *CertStore) bool {
	a, b := s.cur.Load().certs, other.cur.Load().certs
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i].Certificate) != len(b[i].Certificate) {
			return false
		}
		for j := range a[i].Certificate {
			if !bytes.Equal(a[i].Certificate[j], b[i].Certificate[j]) {
				return false
			}
		}
	}
	return true
}

func loadSet(pairs []CertPair) (*certSet, error) {
	set := &certSet{pairs: pairs, exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	for _, p := range pairs {
		c, err := loadPair(p)
		if err != nil {
			return nil, err
		}
		set.certs = append(set.certs, c)
		names := c.Leaf.DNSNames
		if len(names) == 0 && c.Leaf.Subject.CommonName != "" {
			names = []string{c.Leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = lowerASCII(n)
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				if _, taken := set.wild[rest]; !taken {
					set.wild[rest] = c
				}
			} else if _, taken := set.exact[n]; !taken {
				set.exact[n] = c
			}
		}
	}
	return set, nil
}

func loadPair(p CertPair) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(p.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s: %w", p.CertFile, err)
	}
	keyPEM, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls key %s: %w", p.KeyFile, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s with key %s: %w", p.CertFile, p.KeyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls certificate %s: %w", p.CertFile, err)
		}
	}
	switch c.PrivateKey.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
	default:
		return nil, fmt.Errorf("tls key %s: unsupported key type %T", p.KeyFile, c.PrivateKey)
	}
	return &c, nil
}

// lowerASCII folds A-Z only (SNI is ASCII; no Unicode folding on wire data).
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// Lookup returns the certificate for a server name ("" for none).
func (s *CertStore) Lookup(name string) *tls.Certificate {
	set := s.cur.Load()
	name = strings.TrimSuffix(lowerASCII(name), ".")
	if name != "" {
		if c := set.exact[name]; c != nil {
			return c
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c := set.wild[name[i+1:]]; c != nil {
				return c
			}
		}
	}
	return set.certs[0]
}

// GetCertificate is tls.Config.GetCertificate.
func (s *CertStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Lookup(hello.ServerName), nil
}

// Names lists the DNS names served, default certificate first.
func (s *CertStore) Names() []string {
	var names []string
	for _, c := range s.cur.Load().certs {
		names = append(names, c.Leaf.DNSNames...)
	}
	return names
}
