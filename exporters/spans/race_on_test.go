//go:build race

package spans

// sync.Pool drops items at random under the race detector.
const raceEnabled = true
