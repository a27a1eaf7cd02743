package tlsrecord

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// The TLS 1.3 cipher suites (RFC 8446 appendix B.4); the same values as
// crypto/tls.TLS_AES_128_GCM_SHA256 and friends.
const (
	TLS_AES_128_GCM_SHA256       uint16 = 0x1301
	TLS_AES_256_GCM_SHA384       uint16 = 0x1302
	TLS_CHACHA20_POLY1305_SHA256 uint16 = 0x1303
)

const (
	ivLen     = 12 // every TLS 1.3 AEAD uses a 12-byte nonce
	tagLen    = 16 // and a 16-byte tag
	maxKeyLen = 32
	maxSecret = 48 // SHA-384
)

type suiteInfo struct {
	name    string
	keyLen  int
	hashLen int
	hash    func() hash.Hash
	newAEAD func(key []byte) (cipher.AEAD, error)
	// rekeyAfter is how many records we seal under one key before we update
	// our own key: RFC 8446 section 5.5 allows 2^24.5 full-size records per
	// AES-GCM key; ChaCha20-Poly1305 has no practical limit (2^64 is the
	// sequence number's own bound, enforced separately).
	rekeyAfter uint64
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var suites = [...]suiteInfo{
	{"TLS_AES_128_GCM_SHA256", 16, 32, sha256.New, newGCM, 1 << 24},
	{"TLS_AES_256_GCM_SHA384", 32, 48, sha512.New384, newGCM, 1 << 24},
	{"TLS_CHACHA20_POLY1305_SHA256", 32, 32, sha256.New, chacha20poly1305.New, 0},
}

func suiteFor(id uint16) *suiteInfo {
	if id < TLS_AES_128_GCM_SHA256 || id > TLS_CHACHA20_POLY1305_SHA256 {
		return nil
	}
	return &suites[id-TLS_AES_128_GCM_SHA256]
}

// SuiteName returns the IANA name of a TLS 1.3 suite, or "" if id is not one.
func SuiteName(id uint16) string {
	if s := suiteFor(id); s != nil {
		return s.name
	}
	return ""
}

// ErrUnknownSuite is returned for a cipher suite that is not TLS 1.3's.
var ErrUnknownSuite = errors.New("tlsrecord: not a TLS 1.3 cipher suite")

// ExpandLabel is HKDF-Expand-Label (RFC 8446 section 7.1) with the hash of
// suite. It allocates; it runs at key changes only.
func ExpandLabel(suite uint16, secret []byte, label string, context []byte, length int) ([]byte, error) {
	s := suiteFor(suite)
	if s == nil {
		return nil, ErrUnknownSuite
	}
	return expandLabel(s.hash, secret, label, context, length)
}

func expandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) ([]byte, error) {
	full := "tls13 " + label
	if len(full) > 255 || len(context) > 255 || length > 0xffff {
		return nil, errors.New("tlsrecord: HKDF label too long")
	}
	info := make([]byte, 0, 2+1+len(full)+1+len(context))
	info = append(info, byte(length>>8), byte(length), byte(len(full)))
	info = append(info, full...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	return hkdf.Expand(h, secret, string(info), length)
}

// TrafficKeys derives the write key and IV of a traffic secret:
// HKDF-Expand-Label(secret, "key", "", key_length) and (secret, "iv", "", 12).
func TrafficKeys(suite uint16, secret []byte) (key, iv []byte, err error) {
	s := suiteFor(suite)
	if s == nil {
		return nil, nil, ErrUnknownSuite
	}
	if len(secret) != s.hashLen {
		return nil, nil, fmt.Errorf("tlsrecord: %s traffic secret is %d bytes, want %d", s.name, len(secret), s.hashLen)
	}
	if key, err = expandLabel(s.hash, secret, "key", nil, s.keyLen); err != nil {
		return nil, nil, err
	}
	if iv, err = expandLabel(s.hash, secret, "iv", nil, ivLen); err != nil {
		return nil, nil, err
	}
	return key, iv, nil
}

// NextSecret is the KeyUpdate step (RFC 8446 section 7.2):
// application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length).
func NextSecret(suite uint16, secret []byte) ([]byte, error) {
	s := suiteFor(suite)
	if s == nil {
		return nil, ErrUnknownSuite
	}
	return expandLabel(s.hash, secret, "traffic upd", nil, s.hashLen)
}
