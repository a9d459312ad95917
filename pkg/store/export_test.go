package store

// OpenWithBusyTimeout is Open with a short busy timeout, for the tests of a
// held write lock.
var OpenWithBusyTimeout = open
