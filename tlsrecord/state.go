package tlsrecord

import (
	"crypto/cipher"
	"fmt"
	"math"
)

// State is one direction of record protection: the current traffic secret,
// the key and IV derived from it, the AEAD and the sequence number of the
// next record. The zero State is unusable until Init.
//
// A State never reuses a (key, nonce) pair: the sequence number only grows,
// a KeyUpdate moves to a new secret and resets it, and it refuses to seal or
// open once the sequence number reaches 2^64-1 (RFC 8446 section 5.3: it must
// never wrap).
type State struct {
	aead   cipher.AEAD // nil after Drop, rebuilt from key on the next use
	seq    uint64
	suite  uint16
	nonce  [ivLen]byte // scratch: a stack array would escape through the AEAD interface
	iv     [ivLen]byte
	key    [maxKeyLen]byte
	secret [maxSecret]byte

	sealHook func(key, nonce []byte) // tests: observe every (key, nonce) sealed
}

// Init sets the state to a traffic secret at sequence number 0.
func (s *State) Init(suite uint16, secret []byte) error {
	key, iv, err := TrafficKeys(suite, secret)
	if err != nil {
		return err
	}
	info := suiteFor(suite)
	aead, err := info.newAEAD(key)
	if err != nil {
		return err
	}
	hook := s.sealHook
	*s = State{aead: aead, suite: suite, sealHook: hook}
	copy(s.key[:], key)
	copy(s.iv[:], iv)
	copy(s.secret[:], secret)
	clear(key)
	return nil
}

// Suite returns the cipher suite, 0 before Init.
func (s *State) Suite() uint16 { return s.suite }

// Seq returns the sequence number the next record will be sealed or opened with.
func (s *State) Seq() uint64 { return s.seq }

// SetSeq sets the sequence number of the next record. It exists for the one
// place that must establish it from outside: the server's first application
// write after crypto/tls sent NewSessionTicket records under the same key.
// Setting it backwards reuses nonces; callers must only ever move it forward
// from a freshly initialised state.
func (s *State) SetSeq(seq uint64) { s.seq = seq }

// Secret returns the current traffic secret (owned by the State).
func (s *State) Secret() []byte {
	return s.secret[:s.info().hashLen]
}

// Key returns the current AEAD key and IV (owned by the State): what kernel
// TLS needs together with Seq.
func (s *State) Key() (key, iv []byte) {
	return s.key[:s.info().keyLen], s.iv[:]
}

func (s *State) info() *suiteInfo {
	info := suiteFor(s.suite)
	if info == nil {
		panic("tlsrecord: State used before Init")
	}
	return info
}

// Update moves to the next traffic secret (KeyUpdate) and resets the
// sequence number to 0.
func (s *State) Update() error {
	next, err := NextSecret(s.suite, s.Secret())
	if err != nil {
		return err
	}
	err = s.Init(s.suite, next)
	clear(next)
	return err
}

// Drop releases the AEAD (about 800 bytes for AES-GCM, whose expanded key
// schedule and GHASH table live there); the next Seal or Open rebuilds it
// from the stored key. For connections that are idle for a long time.
func (s *State) Drop() { s.aead = nil }

// Dropped reports whether the AEAD is released.
func (s *State) Dropped() bool { return s.aead == nil }

func (s *State) ready() error {
	if s.aead != nil {
		return nil
	}
	info := s.info()
	aead, err := info.newAEAD(s.key[:info.keyLen])
	if err != nil {
		return err
	}
	s.aead = aead
	return nil
}

// Wipe zeroes the key material. The State is unusable afterwards.
func (s *State) Wipe() {
	clear(s.key[:])
	clear(s.iv[:])
	clear(s.secret[:])
	s.aead = nil
	s.suite = 0
}

// nextNonce computes IV xor seq into s.nonce and advances seq
// (RFC 8446 section 5.3).
func (s *State) nextNonce() error {
	if s.seq == math.MaxUint64 {
		return ErrSeqExhausted
	}
	s.nonce = s.iv
	for i := 0; i < 8; i++ {
		s.nonce[ivLen-1-i] ^= byte(s.seq >> (8 * i))
	}
	s.seq++
	return nil
}

// SealRecord protects a record in place. rec[HeaderLen:HeaderLen+n] holds the
// content; the header is written into rec[:HeaderLen], then the inner content
// type, pad zero bytes and the tag follow the content, so cap(rec) must be at
// least HeaderLen+n+1+pad+16. It returns the whole record. n may be 0 only
// for application_data.
func (s *State) SealRecord(rec []byte, typ ContentType, n, pad int) ([]byte, error) {
	if n < 0 || pad < 0 || n > MaxPlaintext || n+1+pad > MaxPlaintext+1 {
		return nil, fmt.Errorf("tlsrecord: seal: %d content bytes and %d padding exceed 2^14", n, pad)
	}
	if n == 0 && typ != ApplicationData {
		return nil, fmt.Errorf("tlsrecord: seal: empty %s record", typ)
	}
	total := HeaderLen + n + 1 + pad + tagLen
	if cap(rec) < total {
		return nil, fmt.Errorf("tlsrecord: seal: buffer capacity %d < %d", cap(rec), total)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.nextNonce(); err != nil {
		return nil, err
	}
	rec = rec[:total-tagLen]
	inner := rec[HeaderLen:]
	inner[n] = byte(typ)
	clear(inner[n+1:])
	clen := n + 1 + pad + tagLen
	rec[0], rec[1], rec[2], rec[3], rec[4] = byte(ApplicationData), 3, 3, byte(clen>>8), byte(clen)
	if s.sealHook != nil {
		s.sealHook(s.key[:s.info().keyLen], s.nonce[:])
	}
	s.aead.Seal(inner[:0], s.nonce[:], inner, rec[:HeaderLen])
	return rec[:total], nil
}

// AppendRecord appends one sealed record carrying p (at most 2^14 bytes) to
// dst. It does not allocate when dst has room for len(p)+22 more bytes.
func (s *State) AppendRecord(dst []byte, typ ContentType, p []byte) ([]byte, error) {
	if len(p) > MaxPlaintext {
		return dst, fmt.Errorf("tlsrecord: seal: %d bytes exceed 2^14", len(p))
	}
	start := len(dst)
	need := Overhead + len(p)
	if cap(dst)-start < need {
		grown := make([]byte, start, start+need+start/4)
		copy(grown, dst)
		dst = grown
	}
	rec := dst[start : start+HeaderLen+len(p)]
	copy(rec[HeaderLen:], p)
	rec, err := s.SealRecord(rec, typ, len(p), 0)
	if err != nil {
		return dst[:start], err
	}
	return dst[:start+len(rec)], nil
}

// OpenRecord authenticates and decrypts one record in place. hdr is its
// 5-byte header (already validated by ParseHeader: it is also the AEAD's
// additional data) and body its encrypted_record; header and body need not be
// contiguous. It returns the inner content type and the content with the zero
// padding stripped, a sub-slice of body. A failure is fatal for the
// connection: the State must not be used to open again.
func (s *State) OpenRecord(hdr, body []byte) (ContentType, []byte, error) {
	if len(body) < minCiphertext {
		return 0, nil, ErrShortRecord
	}
	if err := s.ready(); err != nil {
		return 0, nil, err
	}
	if err := s.nextNonce(); err != nil {
		return 0, nil, err
	}
	inner, err := s.aead.Open(body[:0], s.nonce[:], body, hdr[:HeaderLen])
	if err != nil {
		return 0, nil, ErrBadRecordMAC
	}
	if len(inner) > MaxPlaintext+1 {
		return 0, nil, ErrInnerOverflow
	}
	// The content type is the last non-zero byte (RFC 8446 section 5.4).
	i := len(inner) - 1
	for i >= 0 && inner[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, ErrNoContentType
	}
	return ContentType(inner[i]), inner[:i], nil
}

// Open is OpenRecord for a complete record (header and body contiguous); it
// returns the total length consumed. rec must hold at least the whole record.
func (s *State) Open(rec []byte) (typ ContentType, content []byte, n int, err error) {
	if len(rec) < HeaderLen {
		return 0, nil, 0, ErrShortRecord
	}
	clen, err := ParseHeader(rec)
	if err != nil {
		return 0, nil, 0, err
	}
	if len(rec) < HeaderLen+clen {
		return 0, nil, 0, ErrShortRecord
	}
	typ, content, err = s.OpenRecord(rec[:HeaderLen], rec[HeaderLen:HeaderLen+clen])
	return typ, content, HeaderLen + clen, err
}
