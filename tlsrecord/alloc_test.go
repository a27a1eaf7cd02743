package tlsrecord

import (
	"bytes"
	"testing"
)

// Sealing and opening a 16 KiB record allocate nothing, for every suite, in
// place or through a partial record (the pooled buffer is reused).
func TestSealOpenAllocs(t *testing.T) {
	for _, suite := range allSuites {
		c, s := pair(t, suite)
		msg := bytes.Repeat([]byte{'z'}, MaxPlaintext)
		wire := make([]byte, 0, MaxRecord+64)
		var err error
		seal := func() {
			if wire, err = c.Seal(wire[:0], msg); err != nil || len(wire) != MaxPlaintext+Overhead {
				t.Fatal(len(wire), err)
			}
		}
		if a := testing.AllocsPerRun(100, seal); a != 0 {
			t.Errorf("%s: Seal 16 KiB: %v allocs", SuiteName(suite), a)
		}
		s.r.SetSeq(c.w.Seq()) // the reader did not see the seals above
		open := func() {
			seal()
			n, plain, _, err := s.Open(wire)
			if err != nil || n != len(wire) || len(plain) != MaxPlaintext {
				t.Fatal(n, len(plain), err)
			}
		}
		if a := testing.AllocsPerRun(100, open); a != 0 {
			t.Errorf("%s: Seal+Open 16 KiB in place: %v allocs", SuiteName(suite), a)
		}
		split := func() {
			seal()
			in := wire
			got := 0
			for _, cut := range []int{3, 8000} {
				n, plain, _, err := s.Open(in[:cut])
				if err != nil || n != cut || plain != nil {
					t.Fatal(n, err)
				}
				in = in[cut:]
			}
			n, plain, _, err := s.Open(in)
			if err != nil || n != len(in) {
				t.Fatal(n, err)
			}
			got += len(plain)
			if n, _, _, _ := s.Open(nil); n != 0 || s.Holding() || got != MaxPlaintext {
				t.Fatal("buffer not returned")
			}
		}
		split()
		if a := testing.AllocsPerRun(100, split); a != 0 && !raceEnabled {
			t.Errorf("%s: Seal+Open 16 KiB in three pieces: %v allocs", SuiteName(suite), a)
		}
	}
}

func benchSeal(b *testing.B, suite uint16, size int) {
	c, _ := pair(b, suite)
	msg := make([]byte, size)
	wire := make([]byte, 0, size+(size/MaxPlaintext+1)*Overhead+2*(Overhead+5))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		wire, _ = c.Seal(wire[:0], msg)
	}
}

func benchOpen(b *testing.B, suite uint16, size int) {
	c, s := pair(b, suite)
	msg := make([]byte, size)
	// Opening in place destroys a record, so each iteration opens a fresh
	// copy of a pre-sealed one (the copy stands for the read into the
	// buffer). The batch is re-sealed outside the timer when used up.
	const batch = 64
	recs := make([][]byte, batch)
	reseal := func() {
		s.r.SetSeq(c.w.Seq())
		for j := range recs {
			recs[j], _ = c.Seal(recs[j][:0], msg)
		}
	}
	reseal()
	buf := make([]byte, len(recs[0]))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == batch {
			b.StopTimer()
			reseal()
			i = 0
			b.StartTimer()
		}
		copy(buf, recs[i])
		i++
		if _, _, _, err := s.Open(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	for _, suite := range allSuites {
		b.Run(SuiteName(suite)+"/16KiB", func(b *testing.B) { benchSeal(b, suite, MaxPlaintext) })
		b.Run(SuiteName(suite)+"/1KiB", func(b *testing.B) { benchSeal(b, suite, 1024) })
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, suite := range allSuites {
		b.Run(SuiteName(suite)+"/16KiB", func(b *testing.B) { benchOpen(b, suite, MaxPlaintext) })
		b.Run(SuiteName(suite)+"/1KiB", func(b *testing.B) { benchOpen(b, suite, 1024) })
	}
}

// The cost Shrink adds to the next record: rebuilding the AEAD from the
// stored key (AES key schedule + GHASH table for AES-GCM).
func BenchmarkSealAfterShrink(b *testing.B) {
	for _, suite := range allSuites {
		b.Run(SuiteName(suite), func(b *testing.B) {
			c, _ := pair(b, suite)
			msg := make([]byte, 100)
			wire := make([]byte, 0, 512)
			b.ReportAllocs()
			for b.Loop() {
				c.Shrink()
				wire, _ = c.Seal(wire[:0], msg)
			}
		})
	}
}
