package admin

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/aiproxy/aiproxy/pkg/aiproxy"
	"github.com/aiproxy/aiproxy/pkg/store"
)

// LimitChange is a new value for one limit, in its flag form: Field is one
// of aiproxy.LimitFields, Value "60", "100000/day", "5/month", "gpt-4o*,o1"
// or "none" (remove that limit).
type LimitChange struct {
	Field string
	Value string
}

// LimitsUpdate is one `user limit` (or the limit flags of `user create`):
// Clear first removes the user's own limits, then Changes apply in order.
type LimitsUpdate struct {
	Clear   bool
	Changes []LimitChange
}

// Empty reports whether up changes nothing.
func (up LimitsUpdate) Empty() bool { return !up.Clear && len(up.Changes) == 0 }

// apply returns cur (nil: none of its own) changed by up; nil when up
// clears and sets nothing, so that the defaults apply again.
func (up LimitsUpdate) apply(cur *aiproxy.Limits) (*aiproxy.Limits, error) {
	next := &aiproxy.Limits{}
	if cur != nil && !up.Clear {
		c := *cur
		c.Models = slices.Clone(cur.Models)
		next = &c
	}
	for _, ch := range up.Changes {
		if err := next.Set(ch.Field, ch.Value); err != nil {
			return nil, err
		}
	}
	if up.Clear && len(up.Changes) == 0 {
		return nil, nil
	}
	return next, nil
}

// CheckLimits validates up without storing anything. Errors: EINVALID,
// naming the limit.
func (s *Service) CheckLimits(up LimitsUpdate) error {
	_, err := up.apply(nil)
	return err
}

func validateLimitsName(name string) error {
	if name == store.DefaultsName {
		return nil
	}
	return aiproxy.ValidateUserName(name)
}

// SetLimits changes the limits of user name, or the defaults when name is
// "*", in one transaction, and returns the user's row with its limits. A
// change of a running serve's limits applies at its next request.
// Errors: EINVALID (name, a value: nothing is changed), ENOTFOUND.
func (s *Service) SetLimits(ctx context.Context, name string, up LimitsUpdate) (_ aiproxy.User, err error) {
	ctx, end := s.change(ctx, "user.limit", name)
	defer func() { end(err) }()
	if err := validateLimitsName(name); err != nil {
		return aiproxy.User{}, err
	}
	if up.Empty() {
		return aiproxy.User{}, aiproxy.Errorf(aiproxy.EINVALID,
			"nothing to change: give a limit (%s) or clear", strings.Join(aiproxy.LimitFields, ", "))
	}
	if err := s.CheckLimits(up); err != nil {
		return aiproxy.User{}, err
	}
	if err := s.db.UpdateLimits(ctx, name, s.Now(), up.apply); err != nil {
		return aiproxy.User{}, err
	}
	return s.UserRow(ctx, name)
}

// CreateUserWithLimits is CreateUser with the user's own limits set at
// once; a bad limit is refused before the user is made.
// Errors: as CreateUser and SetLimits.
func (s *Service) CreateUserWithLimits(ctx context.Context, name string, exp Expiry, up LimitsUpdate) (string, error) {
	if err := s.CheckLimits(up); err != nil {
		return "", err
	}
	key, err := s.CreateUser(ctx, name, exp)
	if err != nil || up.Empty() {
		return key, err
	}
	if _, err := s.SetLimits(ctx, name, up); err != nil {
		return "", err
	}
	return key, nil
}

// UserRow returns user name's listing row, limits included; for "*", a row
// named "*" holding the defaults. Errors: ENOTFOUND.
func (s *Service) UserRow(ctx context.Context, name string) (aiproxy.User, error) {
	if name == store.DefaultsName {
		_, defaults, err := s.db.AllLimits(ctx)
		if err != nil {
			return aiproxy.User{}, err
		}
		now := s.Now()
		return aiproxy.User{Name: name, CreatedAt: time.Time{},
			Limits: defaults.View(now, true, func(time.Time) aiproxy.Charged { return aiproxy.Charged{} })}, nil
	}
	users, err := s.ListUsers(ctx)
	if err != nil {
		return aiproxy.User{}, err
	}
	for _, u := range users {
		if u.Name == name {
			return u, nil
		}
	}
	return aiproxy.User{}, aiproxy.Errorf(aiproxy.ENOTFOUND, "user %s not found", name)
}

// fillLimits sets each user's Limits: their own or the defaults, with what
// the current periods used according to the usage records.
func (s *Service) fillLimits(ctx context.Context, users []aiproxy.User) error {
	own, defaults, err := s.db.AllLimits(ctx)
	if err != nil {
		return err
	}
	now := s.Now()
	charged := map[time.Time]map[int64]aiproxy.Charged{}
	for i := range users {
		u := &users[i]
		lim, mine := own[u.ID]
		if !mine {
			lim = defaults
		}
		var ferr error
		u.Limits = lim.View(now, !mine, func(since time.Time) aiproxy.Charged {
			m, ok := charged[since]
			if !ok {
				if m, ferr = s.db.ChargedSince(ctx, since); ferr != nil {
					return aiproxy.Charged{}
				}
				charged[since] = m
			}
			return m[u.ID]
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}

// userLimits is one user's limits view, for Me.
func (s *Service) userLimits(ctx context.Context, userID int64) (aiproxy.LimitsView, error) {
	own, defaults, err := s.db.AllLimits(ctx)
	if err != nil {
		return aiproxy.LimitsView{}, err
	}
	lim, mine := own[userID]
	if !mine {
		lim = defaults
	}
	var ferr error
	v := lim.View(s.Now(), !mine, func(since time.Time) aiproxy.Charged {
		c, err := s.db.UserChargedSince(ctx, userID, since)
		if err != nil {
			ferr = err
		}
		return c
	})
	return v, ferr
}
