package models

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

// Bounds of one provider's answer.
const (
	maxListBody = 8 << 20 // bytes
	maxModels   = 10_000  // ids kept per provider
	maxKeyTries = 3       // keys tried when one is refused
)

// anthropicVersion is sent to x-api-key providers that pin none: Anthropic
// refuses a request without it.
const anthropicVersion = "2023-06-01"

// errNotAList is a 200 answer that is not {"data":[{"id":…},…]}.
var errNotAList = errors.New("answer is not a model list")

// fetch asks p for its model list at its API root + /models, with its key
// in its scheme and its pinned headers. A key that is refused (401, 403,
// 429) makes it try the next one, up to maxKeyTries.
func fetch(ctx context.Context, client *http.Client, p aiproxy.Provider) ([]Model, error) {
	if len(p.Keys) == 0 {
		return nil, errors.New("provider has no key")
	}
	var err error
	for i, key := range p.Keys {
		if i == maxKeyTries {
			break
		}
		var list []Model
		var status int
		list, status, err = fetchWith(ctx, client, p, key)
		if err == nil {
			return list, nil
		}
		if status != http.StatusUnauthorized && status != http.StatusForbidden && status != http.StatusTooManyRequests {
			break
		}
	}
	return nil, err
}

func fetchWith(ctx context.Context, client *http.Client, p aiproxy.Provider, key string) ([]Model, int, error) {
	u := p.APIURL("/models")
	if p.Auth == aiproxy.AuthXAPIKey {
		u += "?limit=1000" // Anthropic pages by 20 by default
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %v", p.APIURL("/models"), err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "aiproxy")
	p.PinHeaders(req.Header)
	if p.Auth == aiproxy.AuthXAPIKey && req.Header.Get("Anthropic-Version") == "" {
		req.Header.Set("Anthropic-Version", anthropicVersion)
	}
	p.SetAuth(req.Header, key)
	res, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", req.URL.Redacted(), scrubURLError(err))
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		return nil, res.StatusCode, fmt.Errorf("GET %s: status %d", req.URL.Redacted(), res.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxListBody+1))
	if err != nil {
		return nil, res.StatusCode, fmt.Errorf("GET %s: read: %w", req.URL.Redacted(), err)
	}
	if len(b) > maxListBody {
		return nil, res.StatusCode, fmt.Errorf("GET %s: answer longer than %d bytes", req.URL.Redacted(), maxListBody)
	}
	list, err := parseList(b, p.Name())
	if err != nil {
		return nil, res.StatusCode, fmt.Errorf("GET %s: %w", req.URL.Redacted(), err)
	}
	return list, res.StatusCode, nil
}

// scrubURLError keeps the cause of a *url.Error without its URL (the
// caller names it once).
func scrubURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// upstreamModel is one item of a provider's list: OpenAI's shape
// ({"id","object","created","owned_by"}) or Anthropic's ({"id","type",
// "display_name","created_at"}). Only id must be there.
type upstreamModel struct {
	ID        *string         `json:"id"`
	Created   json.RawMessage `json:"created"`
	CreatedAt json.RawMessage `json:"created_at"`
	OwnedBy   json.RawMessage `json:"owned_by"`
}

// parseList reads {"data":[{"id":…},…]} (other fields, such as Anthropic's
// has_more and last_id, are ignored: the first page is the list). Anything
// else, or an item without a string id, is errNotAList. owner is
// owned_by for items that name none.
func parseList(b []byte, owner string) ([]Model, error) {
	var body struct {
		Data *[]upstreamModel `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&body); err != nil || body.Data == nil || dec.More() {
		return nil, errNotAList
	}
	out := make([]Model, 0, min(len(*body.Data), maxModels))
	for _, m := range *body.Data {
		if m.ID == nil {
			return nil, errNotAList
		}
		id := *m.ID
		if id == "" || len(id) > aiproxy.MaxModelLen || !printable(id) {
			continue
		}
		if len(out) == maxModels {
			break
		}
		out = append(out, Model{
			ID: id, Upstream: id, Object: "model",
			Created: created(m.Created, m.CreatedAt), OwnedBy: ownedBy(m.OwnedBy, owner),
		})
	}
	return out, nil
}

// printable reports whether id has no control bytes or spaces.
func printable(id string) bool {
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] == 0x7f {
			return false
		}
	}
	return true
}

// created is OpenAI's Unix seconds, or Anthropic's RFC 3339 created_at, or 0.
func created(unix, rfc3339 json.RawMessage) int64 {
	if n, err := strconv.ParseInt(string(unix), 10, 64); err == nil {
		return n
	}
	var s string
	if json.Unmarshal(rfc3339, &s) == nil {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			return t.Unix()
		}
	}
	return 0
}

func ownedBy(raw json.RawMessage, owner string) string {
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return s
	}
	return owner
}
