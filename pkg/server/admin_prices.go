package server

// The price routes, twins of `aiproxy price list|set|remove` (CONTRACT
// section 5), registered in both forms by registerAdmin:
//
//	GET    /{token}/prices                   JSON array of price rows
//	POST   /{token}/price/{model...}         OK | {"ok":true}; body {"input","output","cached_input"}
//	DELETE /{token}/price/{model...}         OK | {"ok":true}
//
// A model may hold "/" (openai/gpt-oss-120b): the rest of the path is the
// model. Prices are US dollars per 1M tokens; cached_input may be absent or
// null (cached input then costs what other input costs).

import (
	"net/http"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func (s *Server) adminPrices(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.svc.ListPrices(r.Context())
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []aiproxy.Price{}
	}
	writeJSON(w, http.StatusOK, ps)
	return nil
}

func (s *Server) adminSetPrice(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Input       *float64 `json:"input"`
		Output      *float64 `json:"output"`
		CachedInput *float64 `json:"cached_input"`
	}
	present, err := decodeBody(w, r, &body)
	if aiproxy.ErrorMessage(err) == "request body has an unknown field" {
		// decodeBody never echoes the body; name the fields a price takes.
		return aiproxy.Errorf(aiproxy.EINVALID, `request body has an unknown field: a price takes only "input", "output" and "cached_input"`)
	}
	if err != nil {
		return err
	}
	if !present {
		return aiproxy.Errorf(aiproxy.EINVALID,
			`missing request body: want {"input":USD,"output":USD,"cached_input":USD} per 1M tokens`)
	}
	_, err = s.svc.SetPrice(r.Context(), admin.PriceInput{
		Model: r.PathValue("model"), Input: body.Input, Output: body.Output, CachedInput: body.CachedInput,
	})
	if err != nil {
		return err
	}
	writeOK(w, r)
	return nil
}

func (s *Server) adminRemovePrice(w http.ResponseWriter, r *http.Request) error {
	if err := s.svc.RemovePrice(r.Context(), r.PathValue("model")); err != nil {
		return err
	}
	writeOK(w, r)
	return nil
}
