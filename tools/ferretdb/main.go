// Command ferretdb runs FerretDB v1 (SQLite backend) for tests and local development.
//
// It exists because `go install github.com/FerretDB/FerretDB/cmd/ferretdb` panics at startup
// (upstream issue #2982): the command reads build/version/version.txt, a generated file that is
// not part of the published module. The embeddable package github.com/FerretDB/FerretDB/ferretdb
// skips that file whenever the main module is not FerretDB itself (see build/version's init), so
// importing it from this module needs no version file, no ldflags and no build tags.
// scripts/ferretdb.ts builds it with -tags ferretdb_no_postgresql only to leave the unused
// PostgreSQL backend out (a smaller binary, a shorter first build); plain `go build` works too.
//
// Once the listener accepts connections, it prints exactly one line to stdout:
//
//	READY mongodb://127.0.0.1:PORT/
//
// With -listen 127.0.0.1:0 the kernel picks the port and the line reports the real one.
// SIGTERM or SIGINT shuts it down cleanly (a second signal exits at once). With
// -exit-on-stdin-eof it also shuts down when its stdin is closed, so a parent that dies without
// cleaning up (a killed test worker) does not leave it running.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP listen address host:port (port 0 picks a free port)")
	dir := flag.String("sqlite-dir", "", "SQLite data directory, created if missing (default: a temporary directory removed on exit)")
	level := flag.String("log-level", "error", "log level: debug, info, warn or error (logs go to stderr)")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "shut down when stdin reaches EOF (the parent went away)")
	flag.Parse()

	if err := run(*listen, *dir, *level, *stdinEOF); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}

func run(listen, dir, level string, stdinEOF bool) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("invalid -log-level %q: %w", level, err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	// FerretDB also logs through slog.Default in a few places.
	slog.SetDefault(logger)

	if dir == "" {
		tmp, err := os.MkdirTemp("", "ferretdb-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}

	// The SQLite backend wants a "file:" URI naming an existing directory, ending with "/".
	sqliteURL := (&url.URL{Scheme: "file", Path: strings.TrimSuffix(filepath.ToSlash(abs), "/") + "/"}).String()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if stdinEOF {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()

		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			logger.Info("stdin closed, shutting down")
			cancel()
		}()
	}

	// New binds the listener, so MongoDBURI can report the real port (even for port 0).
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return err
	}

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	fmt.Printf("READY %s\n", f.MongoDBURI())

	select {
	case err = <-done:
		return err
	case <-ctx.Done():
	}

	// Restore default signal handling: a second SIGTERM/SIGINT kills the process at once,
	// without waiting for clients that are still connected (FerretDB gives them a few seconds).
	stop()

	return <-done
}
