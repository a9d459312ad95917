package aiproxy

import (
	"time"
	"unicode/utf8"
)

// User is one person who holds a proxy key. The key itself is never kept:
// only its hash (in the store) and a hint for listings.
type User struct {
	ID         int64      `json:"-"`
	Name       string     `json:"name"`
	KeyHint    string     `json:"key_hint"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Requests   int64      `json:"requests"`
	// Limits are the user's limits with what the current periods used
	// (limits.go); filled by admin listings, zero elsewhere.
	Limits LimitsView `json:"limits"`
}

// Expired reports whether the user's key has expired at now.
func (u *User) Expired(now time.Time) bool {
	return u.ExpiresAt != nil && !now.Before(*u.ExpiresAt)
}

// Provider is an upstream host with its base URL and the keys that may be
// used for it. Keys stay inside the process: they have no JSON form.
// Alias, APIRoot, Auth and Headers are the settings of CONTRACT section 6
// (see provider.go); JSON shows an empty Alias as null.
type Provider struct {
	ID          int64    `json:"-"`
	Host        string   `json:"host"`
	BaseURL     string   `json:"base_url"`
	KeyCount    int      `json:"keys"`
	KeyHints    []string `json:"key_hints"`
	InjectUsage bool     `json:"inject_usage"`
	// Alias is another name for the provider ("groq"), usable wherever Host
	// is; empty when none.
	Alias string `json:"alias"`
	// APIRoot is the path under BaseURL where the provider's OpenAI-style
	// API starts: "/v1", "/openai/v1" for Groq.
	APIRoot string `json:"api_root"`
	// Auth is the header scheme the provider takes its key in: AuthBearer,
	// AuthXAPIKey, AuthAPIKey or AuthGoogAPIKey.
	Auth string `json:"auth"`
	// Headers are sent with every request to the provider (canonical
	// names); never nil in a listing. Read-only once returned by the store.
	Headers map[string]string `json:"headers"`
	// KeyStates are the states of the keys, in the order of KeyHints.
	KeyStates []KeyState `json:"key_states"`
	// Version changes whenever an admin touches the provider (any add, set
	// or remove for its host), which also makes every key usable again.
	Version int64 `json:"-"`
	// Keys holds the provider's secret keys. It is filled only for the proxy
	// and never marshalled.
	Keys []string `json:"-"`
}

// Usage is the record of one proxied request.
type Usage struct {
	Time             time.Time
	UserID           int64
	UserName         string
	Provider         string
	Model            string
	Path             string
	Status           int
	PromptTokens     *int64 // nil: the upstream reported no usage
	CompletionTokens *int64
	TotalTokens      *int64
	ReasoningTokens  *int64
	CachedTokens     *int64
	Duration         time.Duration
	TTFB             time.Duration // time to the first response byte; 0 if none
	Streamed         bool
	Partial          bool // the stream ended early: client left or upstream cut
	// CostUSD is what the request cost at the price in force when it ended;
	// nil for an unpriced model or unknown usage.
	CostUSD *float64
	// ChargedTokens and ChargedMicroUSD are what pkg/limits charged the
	// request against the user's budgets (Reservation.Settle), when the
	// request had a reservation; 0 otherwise. They differ from the usage
	// above when it could not be read: the reservation is charged then
	// (budgets fail closed). Stored, so that a restart rebuilds the counters.
	ChargedTokens   int64
	ChargedMicroUSD int64
	// Unmetered: a metered endpoint (chat completions, completions,
	// responses, embeddings, messages) answered without usage that aiproxy
	// could read.
	Unmetered bool
}

// Stats grouping keys accepted by StatsFilter.By.
const (
	ByUser     = "user"
	ByModel    = "model"
	ByProvider = "provider"
	ByDay      = "day"
)

// StatsFilter selects and groups usage records.
type StatsFilter struct {
	User  string    // only this user's records when set
	Since time.Time // only records at or after Since when non-zero
	By    string    // "", ByUser, ByModel, ByProvider or ByDay
}

// StatsRow is one group of usage totals. Key is the group's value (a user
// name, model, provider host or YYYY-MM-DD day); it is empty for the totals
// row of an ungrouped query.
type StatsRow struct {
	Key              string
	Requests         int64
	Errors           int64
	Partial          int64
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
	// CostUSD is the sum of the group's stored costs (whole micro-dollars);
	// nil when no record of the group was priced.
	CostUSD *float64
	// Unmetered counts the group's metered requests answered without usage.
	Unmetered int64
}

// UsageTotals is a user's own usage, as shown by GET /me.
type UsageTotals struct {
	Requests         int64 `json:"requests"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// Bounds of the client-controlled values that aiproxy stores or logs: longer
// ones are cut (never refused), so that a key holder cannot fill the disk or
// the log with one request.
const (
	MaxModelLen = 256
	MaxPathLen  = 1024
	MaxAgentLen = 256
)

// Clip returns s cut to at most n bytes, on a UTF-8 boundary, with "…"
// marking a cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
