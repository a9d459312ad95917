package proxy

// The end of a request: settling its reservation, its log line, its metrics
// and its usage record.

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/metrics"
)

// finish logs the request and queues its usage record.
func (p *Proxy) finish(r *http.Request, x *exchange) {
	if x.done {
		return
	}
	x.done = true
	if x.idle != nil {
		x.idle.Stop()
		// What net/http still has to write after the handler returns gets
		// one more write timeout.
		_ = x.rc.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout))
	}
	if x.scanner != nil {
		x.tokens = x.scanner.Usage()
		if x.tokens.Model != "" {
			x.model = aiproxy.Clip(x.tokens.Model, aiproxy.MaxModelLen)
		}
	}
	dur := p.now().Sub(x.start)
	// A forwarded request whose answer did not reach its end: the upstream
	// broke off, went silent, or the client left.
	partial := x.recorded && !x.eof && !x.failed
	if x.stream {
		p.cfg.Metrics.StreamClosed()
	}
	var cost *float64
	if x.price != nil && x.tokens.PromptTokens != nil {
		c := x.price.Cost(*x.tokens.PromptTokens, deref(x.tokens.CachedTokens), deref(x.tokens.CompletionTokens))
		cost = &c
	}
	// aiproxy's own refusal, or an upstream error status, gives the
	// reservation back. A request that went upstream and ended early (the
	// upstream broke off, or the client left, before or during the answer)
	// is charged its reservation: the provider may bill it whole, and usage
	// seen so far (Anthropic's message_start) understates it. Anything else
	// is charged its usage, or the reservation when none could be read:
	// budgets fail closed.
	var charged aiproxy.Charged
	switch {
	case x.failed || !x.recorded || x.status >= 400 && x.status != statusClientLeft:
		x.res.Release()
	case partial:
		charged = x.res.Settle(nil, nil, nil, nil)
	default:
		charged = x.res.Settle(x.tokens.PromptTokens, x.tokens.CompletionTokens, x.tokens.CachedTokens, cost)
	}
	p.logExchange(r, x, dur, partial)
	p.cfg.Metrics.RequestDone(metrics.Request{
		Provider: x.provider, Route: routeKind(x.path), Status: x.status, Duration: dur, TTFB: x.ttfb,
		Model: x.model, User: x.user.Name, PromptTokens: x.tokens.PromptTokens,
		CompletionTokens: x.tokens.CompletionTokens, CostUSD: cost,
	})
	if !x.recorded || p.rec == nil {
		return
	}
	p.rec.Record(aiproxy.Usage{
		Time:             x.start,
		UserID:           x.user.ID,
		UserName:         x.user.Name,
		Provider:         x.provider,
		Model:            x.model,
		Path:             x.path,
		Status:           x.status,
		PromptTokens:     x.tokens.PromptTokens,
		CompletionTokens: x.tokens.CompletionTokens,
		TotalTokens:      x.tokens.TotalTokens,
		ReasoningTokens:  x.tokens.ReasoningTokens,
		CachedTokens:     x.tokens.CachedTokens,
		Duration:         dur,
		TTFB:             x.ttfb,
		Streamed:         x.streamed,
		Partial:          partial,
		CostUSD:          cost,
		ChargedTokens:    charged.Tokens,
		ChargedMicroUSD:  charged.MicroUSD,
		Unmetered:        x.metered && x.status < 400 && x.tokens.TotalTokens == nil && x.tokens.PromptTokens == nil,
	})
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// routeKind is the metrics' route label of a path.
func routeKind(path string) string {
	path = strings.TrimRight(path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"), strings.HasSuffix(path, "/completions"):
		return "chat"
	case strings.HasSuffix(path, "/responses"):
		return "responses"
	case strings.HasSuffix(path, "/embeddings"):
		return "embeddings"
	case strings.HasSuffix(path, "/messages"):
		return "messages"
	case strings.Contains(path, "/models"):
		return "models"
	}
	return "other"
}

// logExchange writes the request's log line.
func (p *Proxy) logExchange(r *http.Request, x *exchange, dur time.Duration, partial bool) {
	var a [16]slog.Attr // room for every attribute: no allocation
	attrs := append(a[:0],
		slog.String("request_id", x.id),
		slog.String("method", r.Method),
		slog.String("path", x.path),
		slog.String("user", x.user.Name),
		slog.String("provider", x.provider),
		slog.String("model", x.model),
		slog.Int("status", x.status),
		slog.Float64("dur_ms", float64(dur.Microseconds())/1000),
		slog.Int64("bytes", x.bytes),
		slog.Bool("streamed", x.streamed),
	)
	if partial {
		attrs = append(attrs, slog.Bool("partial", true))
	}
	if x.upID != "" {
		attrs = append(attrs, slog.String("upstream_request_id", x.upID))
	}
	if t := x.tokens.PromptTokens; t != nil {
		attrs = append(attrs, slog.Int64("prompt_tokens", *t))
	}
	if t := x.tokens.CompletionTokens; t != nil {
		attrs = append(attrs, slog.Int64("completion_tokens", *t))
	}
	if x.errMsg != "" {
		attrs = append(attrs, slog.String("err", aiproxy.Clip(x.errMsg, aiproxy.MaxPathLen)))
	}
	level := slog.LevelInfo
	if x.status >= 500 || x.errMsg != "" {
		level = slog.LevelWarn
	}
	p.log.LogAttrs(r.Context(), level, "proxy", attrs...)
}
