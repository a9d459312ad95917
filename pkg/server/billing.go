package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/httperr"
)

// The billing routes that NextChat-style apps ask for (CONTRACT section 6),
// answered from the caller's spend limit and usage in OpenAI's old shapes:
//
//	GET /dashboard/billing/subscription   (also under /v1/)
//	GET /dashboard/billing/usage?start_date=YYYY-MM-DD&end_date=YYYY-MM-DD

// billingRoute reports whether the path (as it came) is a billing route,
// and which one.
func billingRoute(raw string) (string, bool) {
	raw = strings.TrimPrefix(raw, "/v1")
	switch raw {
	case "/dashboard/billing/subscription":
		return "subscription", true
	case "/dashboard/billing/usage":
		return "usage", true
	}
	return "", false
}

type subscriptionJSON struct {
	Object             string  `json:"object"`
	HasPaymentMethod   bool    `json:"has_payment_method"`
	HardLimitUSD       float64 `json:"hard_limit_usd"`
	SoftLimitUSD       float64 `json:"soft_limit_usd"`
	SystemHardLimitUSD float64 `json:"system_hard_limit_usd"`
	AccessUntil        int64   `json:"access_until"`
}

type usageJSON struct {
	Object     string  `json:"object"`
	TotalUsage float64 `json:"total_usage"` // cents
}

// billing answers one billing route for the caller's own key.
func (s *Server) billing(w http.ResponseWriter, r *http.Request, which string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httperr.Write(w, notAllowed(r.Method, "GET, HEAD"))
		return
	}
	me, ok := s.caller(w, r)
	if !ok {
		return
	}
	if which == "subscription" {
		sub := subscriptionJSON{Object: "billing_subscription", HasPaymentMethod: true}
		if sp := me.Limits.Spend; sp != nil {
			sub.HardLimitUSD, sub.SoftLimitUSD, sub.SystemHardLimitUSD = sp.LimitUSD, sp.LimitUSD, sp.LimitUSD
		}
		if me.ExpiresAt != nil {
			sub.AccessUntil = me.ExpiresAt.Unix()
		}
		writeJSON(w, http.StatusOK, sub)
		return
	}
	// usage: the cost of the caller's requests from start_date up to, not
	// including, end_date (UTC days); this month so far by default.
	now := time.Now().UTC()
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"start_date", &start}, {"end_date", &end}} {
		if v := r.URL.Query().Get(p.name); v != "" {
			t, err := time.Parse(time.DateOnly, v)
			if err != nil {
				s.writeError(w, r, aiproxy.Errorf(aiproxy.EINVALID, "invalid %s: want YYYY-MM-DD", p.name))
				return
			}
			*p.t = t
		}
	}
	rows, err := s.svc.Stats(r.Context(), admin.StatsQuery{User: me.Name, Since: start.Format(time.DateOnly), By: aiproxy.ByDay})
	if err != nil && aiproxy.ErrorCode(err) != aiproxy.ENOTFOUND {
		s.writeError(w, r, err)
		return
	}
	var usd float64
	for _, row := range rows {
		if day, err := time.Parse(time.DateOnly, row.Key); err == nil && day.Before(end) && row.CostUSD != nil {
			usd += *row.CostUSD
		}
	}
	writeJSON(w, http.StatusOK, usageJSON{Object: "list", TotalUsage: usd * 100})
}
