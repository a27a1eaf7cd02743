package tlsterm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/wsgate/wsgate/tlsrecord"
)

// Kernel TLS (linux/tls.h). With the TLS ULP on a socket and these structs
// set with setsockopt(SOL_TLS, TLS_TX / TLS_RX), the kernel seals and opens
// records itself, so a TLS tunnel can be spliced like a plain one. The
// handshake and every key change stay in user space; the kernel needs the
// current key, IV and sequence number of each direction, taken at a record
// boundary with nothing buffered in user space.

// KTLSMode is -ktls: "auto" uses kernel TLS where the probe finds it,
// "off" never does.
type KTLSMode uint8

const (
	KTLSAuto KTLSMode = iota
	KTLSOff
)

// ParseKTLSMode parses a -ktls value.
func ParseKTLSMode(s string) (KTLSMode, error) {
	switch s {
	case "auto":
		return KTLSAuto, nil
	case "off":
		return KTLSOff, nil
	}
	return 0, fmt.Errorf("-ktls %q: want auto or off", s)
}

const (
	solTLS = 282 // SOL_TLS
	tcpULP = 31  // TCP_ULP
	tlsTX  = 1   // TLS_TX
	tlsRX  = 2   // TLS_RX

	ktlsVersion13   = 0x0304 // TLS_1_3_VERSION
	cipherAESGCM128 = 51     // TLS_CIPHER_AES_GCM_128
	cipherAESGCM256 = 52     // TLS_CIPHER_AES_GCM_256
	cipherChaCha20  = 54     // TLS_CIPHER_CHACHA20_POLY1305
)

// ktlsLayout is one struct tls12_crypto_info_*: the offsets of its fields.
// Every field after the 4-byte header is an unsigned char array, so there is
// no padding anywhere and the size is the sum of the fields.
type ktlsLayout struct {
	cipher                           uint16
	ivOff, ivLen, keyOff, keyLen     int
	saltOff, saltLen, seqOff, seqLen int
	size                             int
}

var (
	// struct tls12_crypto_info_aes_gcm_128 { info; iv[8]; key[16]; salt[4]; rec_seq[8]; } = 40 bytes
	layoutAES128 = ktlsLayout{cipherAESGCM128, 4, 8, 12, 16, 28, 4, 32, 8, 40}
	// struct tls12_crypto_info_aes_gcm_256 { info; iv[8]; key[32]; salt[4]; rec_seq[8]; } = 56 bytes
	layoutAES256 = ktlsLayout{cipherAESGCM256, 4, 8, 12, 32, 44, 4, 48, 8, 56}
	// struct tls12_crypto_info_chacha20_poly1305 { info; iv[12]; key[32]; salt[0]; rec_seq[8]; } = 56 bytes
	layoutChaCha20 = ktlsLayout{cipherChaCha20, 4, 12, 16, 32, 48, 0, 48, 8, 56}
)

func layoutFor(suite uint16) (*ktlsLayout, error) {
	switch suite {
	case tlsrecord.TLS_AES_128_GCM_SHA256:
		return &layoutAES128, nil
	case tlsrecord.TLS_AES_256_GCM_SHA384:
		return &layoutAES256, nil
	case tlsrecord.TLS_CHACHA20_POLY1305_SHA256:
		return &layoutChaCha20, nil
	}
	return nil, fmt.Errorf("ktls: suite %#04x not supported", suite)
}

// KTLSCryptoInfo serialises one direction's state as the kernel's
// tls12_crypto_info_* for TLS 1.3: version and cipher type in host byte
// order; the 12-byte TLS 1.3 IV split into salt (first 4 bytes) and iv
// (last 8) for AES-GCM, whole for ChaCha20-Poly1305 (no salt); rec_seq is
// the sequence number of the next record, big-endian (the kernel increments
// it as a big-endian counter and XORs it into the nonce as TLS does).
func KTLSCryptoInfo(st *tlsrecord.State) ([]byte, error) {
	l, err := layoutFor(st.Suite())
	if err != nil {
		return nil, err
	}
	key, iv := st.Key()
	if len(key) != l.keyLen || len(iv) != l.saltLen+l.ivLen {
		return nil, errors.New("ktls: key or IV size does not match the kernel struct")
	}
	b := make([]byte, l.size)
	binary.NativeEndian.PutUint16(b[0:], ktlsVersion13)
	binary.NativeEndian.PutUint16(b[2:], l.cipher)
	copy(b[l.saltOff:l.saltOff+l.saltLen], iv[:l.saltLen])
	copy(b[l.ivOff:l.ivOff+l.ivLen], iv[l.saltLen:])
	copy(b[l.keyOff:l.keyOff+l.keyLen], key)
	binary.BigEndian.PutUint64(b[l.seqOff:], st.Seq())
	return b, nil
}

// ErrKTLSNotAtBoundary: kernel TLS can only take over between records, with
// no partial record held and no KeyUpdate owed.
var ErrKTLSNotAtBoundary = errors.New("ktls: session is not at a record boundary")

// ktlsReady checks a session can be handed to the kernel now.
func ktlsReady(s *tlsrecord.Session) error {
	if s.Partial() || s.Holding() || s.KeyUpdatePending() {
		return ErrKTLSNotAtBoundary
	}
	if s.Err() != nil || s.ReadClosed() || s.WriteClosed() {
		return errors.New("ktls: session is closing")
	}
	return nil
}
