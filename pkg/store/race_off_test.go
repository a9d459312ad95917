//go:build !race

package store_test

const raceDivisor = 1
