//go:build race

package openai

// splitStride is how far apart the every-split tests cut their input: the
// race detector makes each cut some hundred times slower, so under it they
// cut at every seventh byte (and at both ends); .ci/run's plain pass cuts
// at every byte.
const splitStride = 7
