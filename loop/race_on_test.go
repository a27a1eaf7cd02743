//go:build race

package loop

// raceOn: sync.Pool drops items at random under the race detector, so allocation counts are only
// asserted without it.
const raceOn = true
