//go:build !race

package openai

// splitStride: see race_on_test.go.
const splitStride = 1
