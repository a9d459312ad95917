package aiproxy

// Price is what one model costs, in US dollars per one million tokens
// (CONTRACT section 5). CachedInput is nil where the provider prices cached
// input like any other input.
type Price struct {
	Model       string   `json:"model"`
	Input       float64  `json:"input"`
	Output      float64  `json:"output"`
	CachedInput *float64 `json:"cached_input"`
	BuiltIn     bool     `json:"built_in"`
}

// Cost is the dollar cost of one request's usage at p: ((prompt − cached)
// × input + cached × cached input + completion × output) / 1,000,000.
// Cached tokens are part of the prompt and reasoning tokens part of the
// completion, never added again.
func (p Price) Cost(prompt, cached, completion int64) float64 {
	cachedPrice := p.Input
	if p.CachedInput != nil {
		cachedPrice = *p.CachedInput
	}
	cached = min(max(cached, 0), prompt)
	return (float64(prompt-cached)*p.Input + float64(cached)*cachedPrice + float64(completion)*p.Output) / 1e6
}
