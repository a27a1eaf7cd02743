//go:build race

package loop_test

// raceEnabled shrinks transfer sizes: the race detector slows every instrumented byte path ~5-10x.
const raceEnabled = true
