//go:build race

package splice

// tlsRaceOn: sync.Pool drops items at random under the race detector; allocation counts of the TLS
// path are asserted without it.
const tlsRaceOn = true
