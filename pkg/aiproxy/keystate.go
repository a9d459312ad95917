package aiproxy

import "time"

// Provider key states (CONTRACT section 5).
const (
	KeyOK       = "ok"
	KeyResting  = "resting"  // answered 429: rests until Until
	KeyRejected = "rejected" // answered 401/403: rests until an admin touches the provider
)

// KeyState is the state of one provider key, by its hint.
type KeyState struct {
	ID    int64      `json:"-"`
	Hint  string     `json:"hint"`
	State string     `json:"state"`
	Until *time.Time `json:"until"`
}
