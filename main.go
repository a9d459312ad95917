// Command aiproxy shares AI provider accounts through per-user keys.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/aiproxy/aiproxy/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cmd.Execute(ctx, os.Args[1:], cmd.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
