//go:build race

package splice

// raceEnabled: the race detector makes sync.Pool drop items on purpose, so
// allocation counts that rely on a pool are not meaningful under it.
const raceEnabled = true
