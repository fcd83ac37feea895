//go:build race

package admin_test

// raceDetector: the tests run with -race, which slows the server several
// times over; timing bounds are checked only without it.
const raceDetector = true
