//go:build race

package tlsrecord

// sync.Pool drops a share of Puts at random under the race detector.
const raceEnabled = true
