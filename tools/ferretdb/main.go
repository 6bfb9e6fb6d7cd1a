// Command ferretdb runs FerretDB v1 for tests and local development, on its PostgreSQL backend
// (a private server it starts from -postgresql-data and stops, postgres.go; or -postgresql-url)
// or its SQLite one (-sqlite-dir).
//
// It exists because `go install github.com/FerretDB/FerretDB/cmd/ferretdb` panics at startup
// (upstream issue #2982): the command reads build/version/version.txt, a generated file that is
// not part of the published module. The embeddable package github.com/FerretDB/FerretDB/ferretdb
// skips that file whenever the main module is not FerretDB itself (see build/version's init), so
// importing it from this module needs no version file, no ldflags and no build tags.
//
// The SQLite backend does not use indexes for queries (a lookup by key scans the collection), so
// the store and cluster tests, the benchmarks and `npm run db:start` run it on PostgreSQL, a
// private cluster scripts/ferretdb.ts starts; SQLite stays for tests about FerretDB itself.
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
	"runtime"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP listen address host:port (port 0 picks a free port)")
	dir := flag.String("sqlite-dir", "", "SQLite data directory, created if missing (default: a temporary directory removed on exit)")
	pgURL := flag.String("postgresql-url", "", "PostgreSQL connection string: the PostgreSQL backend instead of SQLite")
	pgData := flag.String("postgresql-data", "", "start a private PostgreSQL on this initialized data directory and use it (PostgreSQL backend)")
	pgBin := flag.String("postgresql-bin", "", "directory of the postgres binary, for -postgresql-data")
	pgUser := flag.String("postgresql-user", "", "database user (initdb -U) of -postgresql-data, trusted on loopback")
	pgUID := flag.Int("postgresql-uid", 0, "run postgres as this uid when running as root (PostgreSQL refuses root)")
	pgGID := flag.Int("postgresql-gid", 0, "and this gid")
	pgSettings := flag.String("postgresql-settings", "", "comma-separated name=value server settings for -postgresql-data")
	level := flag.String("log-level", "error", "log level: debug, info, warn or error (logs go to stderr)")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "shut down when stdin reaches EOF (the parent went away)")
	flag.Parse()

	backends := 0
	for _, b := range []string{*dir, *pgURL, *pgData} {
		if b != "" {
			backends++
		}
	}

	if backends > 1 || (*pgData != "" && (*pgBin == "" || *pgUser == "")) {
		fmt.Fprintln(os.Stderr, "ferretdb: use one of -sqlite-dir, -postgresql-url and -postgresql-data (with -postgresql-bin and -postgresql-user)")
		os.Exit(2)
	}

	// Pdeathsig (postgres.go) follows the thread that started the child: keep main on one thread.
	runtime.LockOSThread()

	var pg *pgOptions
	if *pgData != "" {
		pg = &pgOptions{data: *pgData, bin: *pgBin, user: *pgUser, uid: *pgUID, gid: *pgGID}
		if *pgSettings != "" {
			pg.settings = strings.Split(*pgSettings, ",")
		}
	}

	if err := run(*listen, *dir, *pgURL, pg, *level, *stdinEOF); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}

// pgOptions: a private PostgreSQL this process starts (postgres.go).
type pgOptions struct {
	data, bin, user string
	uid, gid        int
	settings        []string
}

func run(listen, dir, pgURL string, pg *pgOptions, level string, stdinEOF bool) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("invalid -log-level %q: %w", level, err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	// FerretDB also logs through slog.Default in a few places.
	slog.SetDefault(logger)

	config := &ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: listen},
		Logger:        logger,
		Handler:       "postgresql",
		PostgreSQLURL: pgURL,
	}

	if pgURL == "" && pg == nil {
		u, cleanup, err := sqliteURL(dir)
		if err != nil {
			return err
		}
		defer cleanup()

		config.Handler = "sqlite"
		config.SQLiteURL = u
	}

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

	if pg != nil {
		server, err := startPostgres(ctx, pg.bin, pg.data, pg.uid, pg.gid, pg.settings)
		if err != nil {
			return err
		}
		// Last: FerretDB closes its connections first.
		defer server.stop()

		config.PostgreSQLURL = server.url(pg.user)
	}

	// New binds the listener, so MongoDBURI can report the real port (even for port 0).
	f, err := ferretdb.New(config)
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

// sqliteURL is the SQLite backend's "file:" URI of dir (created if missing), or of a temporary
// directory that cleanup removes when dir is empty.
func sqliteURL(dir string) (string, func(), error) {
	cleanup := func() {}

	if dir == "" {
		tmp, err := os.MkdirTemp("", "ferretdb-")
		if err != nil {
			return "", cleanup, err
		}

		cleanup = func() { os.RemoveAll(tmp) }
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", cleanup, err
	}

	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", cleanup, err
	}

	// The SQLite backend wants a "file:" URI naming an existing directory, ending with "/".
	return (&url.URL{Scheme: "file", Path: strings.TrimSuffix(filepath.ToSlash(abs), "/") + "/"}).String(), cleanup, nil
}
