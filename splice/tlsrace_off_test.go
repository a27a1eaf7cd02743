//go:build !race

package splice

const tlsRaceOn = false
