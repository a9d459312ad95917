package admin

import (
	"context"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/prices"
)

// MaxPrice bounds a price, in US dollars per 1M tokens ($1 a token), so
// that a typo cannot make one request cost more than int64 micro-dollars
// hold.
const MaxPrice = 1_000_000

// PriceInput is one `price set`: US dollars per 1M tokens, nil where the
// caller gave no value.
type PriceInput struct {
	Model                      string
	Input, Output, CachedInput *float64
}

// SetPrice stores the price of in.Model, which overrides a built-in one
// and counts from serve's next request. Input and output are required;
// without CachedInput, cached input costs what other input costs.
// It returns the price stored. Errors: EINVALID (naming the field).
func (s *Service) SetPrice(ctx context.Context, in PriceInput) (_ aiproxy.Price, err error) {
	ctx, end := s.change(ctx, "price.set", in.Model)
	defer func() { end(err) }()
	if err := validateModel(in.Model); err != nil {
		return aiproxy.Price{}, err
	}
	if in.Input == nil || in.Output == nil {
		name := "input"
		if in.Input != nil {
			name = "output"
		}
		return aiproxy.Price{}, aiproxy.Errorf(aiproxy.EINVALID, "the %s price is required: US dollars per 1M tokens", name)
	}
	p := aiproxy.Price{Model: in.Model, Input: *in.Input, Output: *in.Output}
	if err := checkPrice("input", p.Input); err != nil {
		return aiproxy.Price{}, err
	}
	if err := checkPrice("output", p.Output); err != nil {
		return aiproxy.Price{}, err
	}
	if in.CachedInput != nil {
		if err := checkPrice("cached input", *in.CachedInput); err != nil {
			return aiproxy.Price{}, err
		}
		v := *in.CachedInput
		p.CachedInput = &v
	}
	if err := s.db.SetPrice(ctx, p, s.Now()); err != nil {
		return aiproxy.Price{}, err
	}
	return p, nil
}

// RemovePrice removes the price set for model; a built-in price of the
// same name applies again. Errors: EINVALID, ENOTFOUND (no price at all),
// ECONFLICT (only a built-in price, which cannot be removed).
func (s *Service) RemovePrice(ctx context.Context, model string) (err error) {
	ctx, end := s.change(ctx, "price.remove", model)
	defer func() { end(err) }()
	if err := validateModel(model); err != nil {
		return err
	}
	missing := aiproxy.Errorf(aiproxy.ENOTFOUND, "model %q has no price", model)
	if _, ok := prices.BuiltinPrice(model); ok {
		missing = aiproxy.Errorf(aiproxy.ECONFLICT,
			"model %q has only a built-in price, which cannot be removed: override it with price set", model)
	}
	return s.db.DeletePrice(ctx, model, missing)
}

// ListPrices returns the prices in force, by model: every built-in one
// (BuiltIn true) and every one set, which replaces a built-in one of the
// same name (BuiltIn false).
func (s *Service) ListPrices(ctx context.Context) ([]aiproxy.Price, error) {
	t, err := prices.Load(ctx, s.db)
	if err != nil {
		return nil, err
	}
	return t.List(), nil
}

// ParsePrice reads a price given as text (a CLI flag's value), in US
// dollars per 1M tokens; name is the field it is for ("input"). Errors:
// EINVALID.
func ParsePrice(name, s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, aiproxy.Errorf(aiproxy.EINVALID,
			"invalid %s price %q: want a number of US dollars per 1M tokens, such as 2.50", name, s)
	}
	return v, checkPrice(name, v)
}

func checkPrice(name string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > MaxPrice {
		return aiproxy.Errorf(aiproxy.EINVALID,
			"invalid %s price %s: want US dollars per 1M tokens, from 0 to %d",
			name, strconv.FormatFloat(v, 'g', -1, 64), MaxPrice)
	}
	return nil
}

// validateModel accepts a model name as sent upstream: 1 to
// aiproxy.MaxModelLen bytes of UTF-8 without spaces or control
// characters. A "/" is allowed (openai/gpt-oss-120b on Groq).
func validateModel(model string) error {
	switch {
	case model == "":
		return aiproxy.Errorf(aiproxy.EINVALID, "model name is empty")
	case len(model) > aiproxy.MaxModelLen:
		return aiproxy.Errorf(aiproxy.EINVALID, "model name is longer than %d bytes", aiproxy.MaxModelLen)
	case !utf8.ValidString(model):
		return aiproxy.Errorf(aiproxy.EINVALID, "model name is not valid UTF-8")
	}
	for _, r := range model {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return aiproxy.Errorf(aiproxy.EINVALID, "model name %q has a space or a control character", model)
		}
	}
	return nil
}

// PriceTable returns the prices in force for the proxy: the built-in table
// merged with the stored prices, read now. The proxy calls its Sync once
// per request, after the user lookup, and its Lookup for the model it sends
// upstream (see prices.Table).
func (s *Service) PriceTable(ctx context.Context) (*prices.Table, error) {
	return prices.Load(ctx, s.db)
}
