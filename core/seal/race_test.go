//go:build race

package seal

// raceEnabled: the race detector changes allocation counts (and sync.Pool
// drops items at random under it), so allocation assertions are skipped.
const raceEnabled = true
