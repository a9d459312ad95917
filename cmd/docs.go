package cmd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra/doc"
	"github.com/spf13/viper"
)

// WriteDocs writes a man page per command into dir/man (aiproxy.1,
// aiproxy-user-create.1, …) and a Markdown page per command into dir/md,
// from the same command tree the binary runs, so they cannot drift from
// --help. The release build calls it through cmd/gendocs.
func WriteDocs(dir string) error {
	app := &appContext{v: viper.New(), streams: Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}}
	root := newRoot(app)
	initCompletion(root)
	root.DisableAutoGenTag = true // no date: the same tree gives the same files
	man, md := filepath.Join(dir, "man"), filepath.Join(dir, "md")
	for _, d := range []string{man, md} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %v", d, unwrapPath(err))
		}
	}
	header := &doc.GenManHeader{Title: "AIPROXY", Section: "1", Source: "aiproxy " + versionOnly(), Manual: "aiproxy manual"}
	if err := doc.GenManTree(root, header, man); err != nil {
		return fmt.Errorf("write man pages: %v", err)
	}
	if err := doc.GenMarkdownTree(root, md); err != nil {
		return fmt.Errorf("write markdown: %v", err)
	}
	return nil
}

// versionOnly is the version without commit and date.
func versionOnly() string {
	v, _, _ := strings.Cut(versionText(), " ")
	return v
}

func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
