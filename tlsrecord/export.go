package tlsrecord

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A Session as bytes, for another process that takes the connection over (wsgate's binary
// upgrade hands established TLS 1.3 connections and WSS tunnels to its successor, which carries
// on with the same keys and sequence numbers: the peer notices nothing).
//
// The state holds both traffic secrets. It must only travel over a channel as private as the
// process's memory (wsgate: a unix socketpair between a process and the child it started, same
// uid) and the caller wipes its copies once they have been sent or read (clear). It is never
// written to a log.
//
// Layout, version 1 (big-endian):
//
//	u8  version
//	u16 cipher suite
//	u8  flags: 1 close_notify received, 2 close_notify or a fatal alert sealed, 4 a KeyUpdate
//	    owed to the peer, 8 client role
//	u8  records without application data in a row; u8 KeyUpdate tokens; u32 refill bytes
//	u32 KeyUpdates received, u32 KeyUpdates sent
//	u64 read sequence number, u64 write sequence number
//	u8  n, the secrets' length; n bytes read traffic secret; n bytes write traffic secret (the
//	    current ones: after every KeyUpdate so far)
//	u8  header bytes of a partial record held (0..5), then 5 bytes (the unused ones zero)
//	u32 body bytes of a partial record held, then those bytes (still ciphertext)
//
// The AEADs are rebuilt from the secrets (a shrunk session travels the same way). The plaintext
// of the last record opened (Open's result) is not part of the state: the caller has used it.

const sessionStateVersion = 1

const stateFixed = 1 + 2 + 1 + 1 + 1 + 4 + 4 + 4 + 8 + 8 + 1

const (
	expReadClosed  = 1
	expWriteClosed = 2
	expKUPending   = 4
	expClient      = 8
)

// ErrStateVersion: the state was written by a version of this package that this one cannot read.
var ErrStateVersion = errors.New("tlsrecord: session state version unknown")

// AppendState appends s's state to dst. A session that failed (Err) has nothing to carry on and
// is refused. s is unchanged; the caller closes it once the new owner has the connection.
func (s *Session) AppendState(dst []byte) ([]byte, error) {
	if s.err != nil {
		return dst, fmt.Errorf("tlsrecord: a failed session does not travel: %w", s.err)
	}
	if s.r.suite == 0 || s.w.suite == 0 {
		return dst, errors.New("tlsrecord: session not initialised")
	}
	var flags uint8
	if s.flags&flagReadClosed != 0 {
		flags |= expReadClosed
	}
	if s.flags&flagWriteClosed != 0 {
		flags |= expWriteClosed
	}
	if s.flags&flagKUPending != 0 {
		flags |= expKUPending
	}
	if s.flags&flagClient != 0 {
		flags |= expClient
	}
	rs, ws := s.r.Secret(), s.w.Secret()
	dst = append(dst, sessionStateVersion)
	dst = binary.BigEndian.AppendUint16(dst, s.r.suite)
	dst = append(dst, flags, s.useless, s.kuTokens)
	dst = binary.BigEndian.AppendUint32(dst, s.refill)
	dst = binary.BigEndian.AppendUint32(dst, s.KeyUpdatesIn)
	dst = binary.BigEndian.AppendUint32(dst, s.KeyUpdatesOut)
	dst = binary.BigEndian.AppendUint64(dst, s.r.seq)
	dst = binary.BigEndian.AppendUint64(dst, s.w.seq)
	dst = append(dst, uint8(len(rs)))
	dst = append(dst, rs...)
	dst = append(dst, ws...)
	hlen, blen := s.hlen, int32(0)
	if hlen != 0 && s.body != nil {
		blen = s.blen
	}
	dst = append(dst, hlen)
	var hdr [HeaderLen]byte
	copy(hdr[:], s.hdr[:hlen])
	dst = append(dst, hdr[:]...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(blen))
	if blen > 0 {
		dst = append(dst, s.body[:blen]...)
	}
	return dst, nil
}

// RestoreSession is a Session carrying on from a state AppendState wrote (in this process or
// another). Anything malformed or inconsistent is refused with what was wrong; secrets never
// appear in the error.
func RestoreSession(b []byte) (*Session, error) {
	if len(b) == 0 || b[0] != sessionStateVersion {
		v := -1
		if len(b) > 0 {
			v = int(b[0])
		}
		return nil, fmt.Errorf("%w: %d (this binary reads %d)", ErrStateVersion, v, sessionStateVersion)
	}
	if len(b) < stateFixed {
		return nil, fmt.Errorf("tlsrecord: session state truncated: %d bytes", len(b))
	}
	suite := binary.BigEndian.Uint16(b[1:])
	info := suiteFor(suite)
	if info == nil {
		return nil, fmt.Errorf("tlsrecord: session state: unknown cipher suite %#04x", suite)
	}
	flags, useless, tokens := b[3], b[4], b[5]
	if flags&^(expReadClosed|expWriteClosed|expKUPending|expClient) != 0 {
		return nil, fmt.Errorf("tlsrecord: session state: unknown flags %#x", flags)
	}
	if useless > maxUseless || tokens > keyUpdateBurst {
		return nil, fmt.Errorf("tlsrecord: session state: limits out of range (%d useless records, %d KeyUpdate tokens)", useless, tokens)
	}
	refill := binary.BigEndian.Uint32(b[6:])
	kin, kout := binary.BigEndian.Uint32(b[10:]), binary.BigEndian.Uint32(b[14:])
	rseq, wseq := binary.BigEndian.Uint64(b[18:]), binary.BigEndian.Uint64(b[26:])
	n := int(b[34])
	if n != info.hashLen {
		return nil, fmt.Errorf("tlsrecord: session state: %d-byte secrets for a suite that uses %d", n, info.hashLen)
	}
	rest := b[stateFixed:]
	if len(rest) < 2*n+1+HeaderLen+4 {
		return nil, fmt.Errorf("tlsrecord: session state truncated: %d bytes", len(b))
	}
	rsec, wsec := rest[:n], rest[n:2*n]
	rest = rest[2*n:]
	hlen := rest[0]
	hdr := rest[1 : 1+HeaderLen]
	blen := binary.BigEndian.Uint32(rest[1+HeaderLen:])
	rest = rest[1+HeaderLen+4:]
	if hlen > HeaderLen {
		return nil, fmt.Errorf("tlsrecord: session state: %d header bytes held", hlen)
	}
	for _, x := range hdr[hlen:] {
		if x != 0 {
			return nil, errors.New("tlsrecord: session state: header bytes beyond those held are not zero")
		}
	}
	var clen int
	switch {
	case hlen == HeaderLen:
		var err error
		if clen, err = ParseHeader(hdr); err != nil {
			return nil, fmt.Errorf("tlsrecord: session state: the partial record's header: %w", err)
		}
	case blen != 0:
		return nil, fmt.Errorf("tlsrecord: session state: %d body bytes held before the header is complete", blen)
	}
	if blen != 0 && int64(blen) >= int64(clen) {
		return nil, fmt.Errorf("tlsrecord: session state: %d body bytes held of a %d-byte record (a complete record is not partial)", blen, clen)
	}
	if int64(len(rest)) != int64(blen) {
		return nil, fmt.Errorf("tlsrecord: session state: %d body bytes announced, %d present", blen, len(rest))
	}
	s := new(Session)
	if err := s.Init(Keys{Suite: suite, ReadSecret: rsec, WriteSecret: wsec, ReadSeq: rseq, WriteSeq: wseq, Client: flags&expClient != 0}); err != nil {
		return nil, fmt.Errorf("tlsrecord: session state: %w", err)
	}
	if flags&expReadClosed != 0 {
		s.flags |= flagReadClosed
	}
	if flags&expWriteClosed != 0 {
		s.flags |= flagWriteClosed
	}
	if flags&expKUPending != 0 {
		s.flags |= flagKUPending
	}
	s.useless, s.kuTokens, s.refill = useless, tokens, refill
	s.KeyUpdatesIn, s.KeyUpdatesOut = kin, kout
	s.hlen = hlen
	copy(s.hdr[:], hdr[:hlen])
	if hlen == HeaderLen {
		s.clen = int32(clen)
	}
	if blen > 0 {
		s.body = bodyPool.Get().(*recordBody)
		copy(s.body[:], rest)
		s.blen = int32(blen)
	}
	return s, nil
}
