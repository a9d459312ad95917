package cmd

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/aiproxy/aiproxy/pkg/admin"
	"github.com/aiproxy/aiproxy/pkg/aiproxy"
)

func newUserCmd(app *appContext) *cobra.Command {
	c := &cobra.Command{
		Use:   "user",
		Short: "Create, reset, delete and list users",
		Long:  "Each user holds one sk-cfw… key. A key is printed once, when it is made; the database keeps only its hash.",
		RunE:  groupRunE,
	}
	c.AddCommand(
		newUserCreateCmd(app),
		newUserResetCmd(app),
		newUserDeleteCmd(app),
		newUserListCmd(app),
		newUserExpireCmd(app),
		newUserLimitCmd(app),
	)
	return c
}

const expiresHelp = "expiry: a duration (90s, 12h, 30d, 2w), a date (2027-01-31, valid through that day, UTC) or an RFC 3339 time"

type userKeyOptions struct {
	Name    string
	Expires string
	Limits  admin.LimitsUpdate // create only: the user's own limits (limit.go)
}

func newUserCreateCmd(app *appContext) *cobra.Command {
	var opts userKeyOptions
	var limits limitFlags
	c := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user and print its new key",
		Long:  "Create user NAME (1–64 characters of A-Z a-z 0-9 _ . @ -) and print its key alone on one line. The key is not shown again.",
		Example: "  aiproxy user create bob\n" +
			"  aiproxy user create carol --expires 30d\n" +
			"  aiproxy user create dave --rpm 20 --spend 5/month",
		Args: argsExact("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Name = args[0]
			opts.Limits = limits.update(c)
			return runUserCreate(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	c.Flags().StringVar(&opts.Expires, "expires", "", expiresHelp+" (default: never)")
	addLimitFlags(c, &limits) // as `user limit`; without them the defaults apply
	return c
}

func runUserCreate(ctx context.Context, app *appContext, out io.Writer, opts userKeyOptions) error {
	return runUserKey(ctx, app, out, opts, func(svc *admin.Service, ctx context.Context, name string, exp admin.Expiry) (string, error) {
		return svc.CreateUserWithLimits(ctx, name, exp, opts.Limits)
	})
}

// runUserKey runs create or reset, which share their input and output:
// NAME and --expires in, the new key alone on one line out.
func runUserKey(ctx context.Context, app *appContext, out io.Writer, opts userKeyOptions,
	op func(*admin.Service, context.Context, string, admin.Expiry) (string, error)) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	exp, err := svc.ExpiryFrom(opts.Expires)
	if err != nil {
		return err
	}
	key, err := op(svc, ctx, opts.Name, exp)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, key)
	return err
}

func newUserResetCmd(app *appContext) *cobra.Command {
	var opts userKeyOptions
	c := &cobra.Command{
		Use:   "reset NAME",
		Short: "Give a user a new key and print it",
		Long:  "Give user NAME a new key and print it alone on one line; the old key stops working at once. Without --expires the expiry is kept.",
		Example: "  aiproxy user reset alice\n" +
			"  aiproxy user reset alice --expires 12h",
		Args: argsExact("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Name = args[0]
			return runUserReset(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	c.Flags().StringVar(&opts.Expires, "expires", "", expiresHelp+" (default: keep)")
	return c
}

func runUserReset(ctx context.Context, app *appContext, out io.Writer, opts userKeyOptions) error {
	return runUserKey(ctx, app, out, opts, (*admin.Service).ResetUser)
}

func newUserDeleteCmd(app *appContext) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a user; its key stops working at once",
		Long:    "Delete user NAME; its key stops working at once. Its past requests stay in the stats.",
		Example: "  aiproxy user delete alice",
		Args:    argsExact("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			svc, err := app.service(c.Context())
			if err != nil {
				return err
			}
			return svc.DeleteUser(c.Context(), args[0])
		},
	}
}

type userExpireOptions struct {
	Name  string
	In    string
	At    string
	Never bool
}

func newUserExpireCmd(app *appContext) *cobra.Command {
	var opts userExpireOptions
	c := &cobra.Command{
		Use:   "expire NAME (--in D | --at DATE | --never)",
		Short: "Change when a user's key expires",
		Long:  "Change when user NAME's key expires, keeping the key. An expired key works again once its expiry is moved into the future.",
		Example: "  aiproxy user expire alice --in 30d\n" +
			"  aiproxy user expire alice --at 2099-12-31\n" +
			"  aiproxy user expire alice --never",
		Args: argsExact("NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			opts.Name = args[0]
			given := 0
			for _, f := range []string{"in", "at"} {
				if c.Flags().Changed(f) {
					given++
				}
			}
			if opts.Never {
				given++
			}
			if given != 1 {
				return fmt.Errorf("user expire: give exactly one of --in D, --at DATE or --never (see '%s --help')", c.CommandPath())
			}
			return runUserExpire(c.Context(), app, opts)
		},
	}
	c.Flags().StringVar(&opts.In, "in", "", "expire after this long (90s, 12h, 30d, 2w)")
	c.Flags().StringVar(&opts.At, "at", "", "expire at this date (2027-01-31, valid through that day, UTC) or RFC 3339 time")
	c.Flags().BoolVar(&opts.Never, "never", false, "never expire")
	return c
}

func runUserExpire(ctx context.Context, app *appContext, opts userExpireOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	exp := admin.Expiry{Set: true} // --never: At stays nil
	if !opts.Never {
		d := opts.In
		if d == "" {
			d = opts.At
		}
		if d == "" {
			return aiproxy.Errorf(aiproxy.EINVALID, "empty time: want a duration (30d, 12h) or a date (2027-01-31)")
		}
		if exp, err = svc.ExpiryFrom(d); err != nil {
			return err
		}
	}
	return svc.SetUserExpiry(ctx, opts.Name, exp)
}

type userListOptions struct{ JSON bool }

func newUserListCmd(app *appContext) *cobra.Command {
	var opts userListOptions
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List users: name, key hint, created, expires, last used, requests, limits",
		Args:    argsExact(),
		RunE: func(c *cobra.Command, _ []string) error {
			return runUserList(c.Context(), app, c.OutOrStdout(), opts)
		},
	}
	addJSONFlag(c, &opts.JSON)
	return c
}

func runUserList(ctx context.Context, app *appContext, out io.Writer, opts userListOptions) error {
	svc, err := app.service(ctx)
	if err != nil {
		return err
	}
	users, err := svc.ListUsers(ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		if users == nil {
			users = []aiproxy.User{}
		}
		return writeJSON(out, users)
	}
	return userListing(users, svc.Now()).write(out)
}

// userListing lays out users for a table; expiry is judged at now.
func userListing(users []aiproxy.User, now time.Time) listing {
	l := listing{Header: []string{"NAME", "KEY", "CREATED", "EXPIRES", "LAST USED", "REQUESTS", "LIMITS"}}
	for _, u := range users {
		expires := cell{Text: "never", Tone: toneMuted}
		if u.ExpiresAt != nil {
			expires = timeCell(*u.ExpiresAt)
			if u.Expired(now) {
				expires = cell{Text: expires.Text + " (expired)", Short: expires.Short + " expired", Tone: toneWarn}
			}
		}
		last := cell{Text: "-", Tone: toneMuted}
		if u.LastUsedAt != nil {
			last = timeCell(*u.LastUsedAt)
		}
		l.Rows = append(l.Rows, []cell{
			{Text: u.Name},
			{Text: u.KeyHint},
			timeCell(u.CreatedAt),
			expires,
			last,
			{Text: strconv.FormatInt(u.Requests, 10)},
			limitsCell(u.Limits),
		})
	}
	return l
}
