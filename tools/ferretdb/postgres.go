package main

// A private PostgreSQL server for the PostgreSQL backend, owned by this process: started from an
// initialized data directory (scripts/ferretdb.ts makes one with initdb and copies it) on a free
// loopback port, as an unprivileged user when this process runs as root (PostgreSQL refuses to
// run as root), and stopped when this process stops. Pdeathsig makes the kernel send it SIGTERM
// if this process dies without stopping it (a SIGKILL), so no server outlives its wrapper.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

type postgresServer struct {
	cmd  *exec.Cmd
	port int
	done chan error
}

// startPostgres starts bin/postgres on dataDir and waits until it accepts connections.
// uid and gid are the user it runs as when this process is root (ignored otherwise).
func startPostgres(ctx context.Context, bin, dataDir string, uid, gid int, settings []string) (*postgresServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}

	args := []string{
		"-D", dataDir,
		"-p", strconv.Itoa(port),
		"-k", dataDir, // the Unix socket stays in the private data directory
		"-c", "listen_addresses=127.0.0.1",
	}
	for _, s := range settings {
		args = append(args, "-c", s)
	}

	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}

	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}

	if err = cmd.Start(); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}

	s := &postgresServer{cmd: cmd, port: port, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()

	deadline := time.Now().Add(60 * time.Second)

	for {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			conn.Close()
			return s, nil
		}

		select {
		case err := <-s.done:
			return nil, fmt.Errorf("postgres exited before it was ready: %v", err)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}

		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("postgres not ready after 60 s")
		}
	}
}

// url is the connection string FerretDB uses: trust authentication on loopback (initdb --auth=trust).
func (s *postgresServer) url(user string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres", user, s.port)
}

// stop asks for a fast shutdown (SIGINT: clients are disconnected, nothing is lost) and waits.
func (s *postgresServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGINT)

	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// freePort asks the kernel for a free loopback port; PostgreSQL itself cannot be told port 0.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()

	return l.Addr().(*net.TCPAddr).Port, nil
}
