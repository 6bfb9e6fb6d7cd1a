package main

// The WatchToken benchmark client: what bench/watch-client.ts does, in Go, so that the
// client's own cost (grpc-js spends ~35 µs of CPU per stream message) does not bound the
// measured latency. Holds every stream on a few connections, triggers renewals with
// StoreUpstreamTokens on a connection of its own, and times each stream's receipt of each
// generation from just before that call, on Go's monotonic clock. The command and reply shapes
// are watch-client.ts's (ClientCommand, OpenReply, RenewReply, CloseReply), as JSON lines.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "tokenvend/tools/goclient/gen/tokenvend/v1"
)

// watchSettings is ClientSettings of bench/watch-client.ts.
type watchSettings struct {
	Address           string  `json:"address"`
	Streams           int     `json:"streams"`
	Channels          int     `json:"channels"`
	Batch             int     `json:"batch"`
	TokenChars        int     `json:"tokenChars"`
	SessionID         string  `json:"sessionId"`
	Provider          string  `json:"provider"`
	DeliveryTimeoutMs float64 `json:"deliveryTimeoutMs"`
	PauseMs           float64 `json:"pauseMs"`
	// Both HTTP/2 receive windows, connection and stream, when set (see windows).
	FlowWindow *int32 `json:"flowWindow,omitempty"`
}

// Receive windows when FlowWindow is not set. A renewal sends every stream of a connection one
// message (10,000 streams of ~2.2 KB on 8 connections: ~2.8 MB per connection), so a 64 MiB
// connection window never makes the server wait for a WINDOW_UPDATE; a stream gets one
// message per renewal, far below 1 MiB. Setting them turns grpc-go's BDP estimation off, so
// the windows stay what is reported.
const (
	defaultConnWindow   = 64 << 20
	defaultStreamWindow = 1 << 20
)

// Every GC cycle scans the stacks of all 10,000 stream goroutines: at Go's default GOGC=100 a
// cycle came every three renewals or so and cost ~35 ms of client CPU per renewal (of ~145),
// CPU taken from the server on these two cores; at GOGC=400 the rarer cycles still landed in
// timed renewals and made most of the p99 tail (docs/BENCHMARKS.md). This process stands in for
// 10,000 callers elsewhere, so its collections are held off until a soft memory limit instead
// (a 30-renewal run peaks near 1 GB; the report shows the client's peak RSS). $GOGC or
// $GOMEMLIMIT, when set, win.
const defaultMemoryLimit = 3 << 30

func windows(s watchSettings) (conn, stream int32) {
	if s.FlowWindow != nil {
		return *s.FlowWindow, *s.FlowWindow
	}
	return defaultConnWindow, defaultStreamWindow
}

type watchCommand struct {
	Cmd   string `json:"cmd"`
	Count int    `json:"count"`
}

type openReply struct {
	Reply        string         `json:"reply"`
	Opened       int            `json:"opened"`
	Failed       int            `json:"failed"`
	RampMs       float64        `json:"rampMs"`
	MessageBytes int            `json:"messageBytes"`
	Errors       map[string]int `json:"errors"`
}

type renewalResult struct {
	Generation  int64     `json:"generation"`
	Delivered   int       `json:"delivered"`
	LatenciesMs []float64 `json:"latenciesMs"`
	AckMs       float64   `json:"ackMs"`
}

type renewReply struct {
	Reply       string          `json:"reply"`
	Renewals    []renewalResult `json:"renewals"`
	GotEvery    int             `json:"gotEvery"`
	Skipped     int             `json:"skipped"`
	Errors      map[string]int  `json:"errors"`
	ClientCPUMs float64         `json:"clientCpuMs"`
}

type closeReply struct {
	Reply  string         `json:"reply"`
	Errors map[string]int `json:"errors"`
}

// pending is one renewal being delivered.
type pending struct {
	t0       time.Time
	lat      []float64 // ms per stream; NaN: not (yet) received
	got      int
	expected int
	done     chan struct{}
	closed   bool
}

func (p *pending) check() {
	if !p.closed && p.got >= p.expected {
		p.closed = true
		close(p.done)
	}
}

type watchBench struct {
	s       watchSettings
	conns   []*grpc.ClientConn
	streams []pb.TokenServiceClient
	control pb.TokenServiceClient
	idToken string
	ctx     context.Context
	cancel  context.CancelFunc
	req     *pb.WatchTokenRequest

	// Everything below is shared by the stream goroutines and the command loop.
	mu           sync.Mutex
	settledCond  *sync.Cond
	lastGen      []int64
	opened       []bool
	skipped      []bool
	ended        []bool
	errors       map[string]int
	messageBytes int
	cancelling   bool
	openedCount  int
	settled      int // streams that opened, or ended before they could
	pending      map[int64]*pending

	latest int64 // only the command loop
}

// token is a random base64url string of n characters (JWT-like size, no meaning).
func token(n int) string {
	b := make([]byte, (n*3+3)/4)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func newWatchBench(s watchSettings) (*watchBench, error) {
	connWindow, streamWindow := windows(s)
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithInitialWindowSize(streamWindow),
	}
	// Each ClientConn is its own HTTP/2 connection.
	dial := func() (*grpc.ClientConn, error) {
		c, err := grpc.NewClient("passthrough:///"+s.Address, opts...)
		if err == nil {
			c.Connect()
		}
		return c, err
	}
	b := &watchBench{
		s:       s,
		idToken: token(s.TokenChars),
		req: &pb.WatchTokenRequest{Target: &pb.WatchTokenRequest_Session{
			Session: &pb.SessionTarget{SessionId: s.SessionID, Provider: s.Provider},
		}},
		lastGen: make([]int64, s.Streams),
		opened:  make([]bool, s.Streams),
		skipped: make([]bool, s.Streams),
		ended:   make([]bool, s.Streams),
		errors:  map[string]int{},
		pending: map[int64]*pending{},
	}
	b.settledCond = sync.NewCond(&b.mu)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	for range s.Channels {
		c, err := dial()
		if err != nil {
			return nil, err
		}
		b.conns = append(b.conns, c)
		b.streams = append(b.streams, pb.NewTokenServiceClient(c))
	}
	// Renewals go out on their own connection, not queued behind stream data.
	c, err := dial()
	if err != nil {
		return nil, err
	}
	b.conns = append(b.conns, c)
	b.control = pb.NewTokenServiceClient(c)
	return b, nil
}

func (b *watchBench) store(generationHint int64) (int64, error) {
	access := fmt.Sprintf("%d.%s", generationHint, token(b.s.TokenChars))[:b.s.TokenChars]
	res, err := b.control.StoreUpstreamTokens(context.Background(), &pb.StoreUpstreamTokensRequest{
		SessionId:    b.s.SessionID,
		Provider:     b.s.Provider,
		AccessToken:  access,
		RefreshToken: token(64),
		IdToken:      b.idToken,
		Expiry:       &pb.StoreUpstreamTokensRequest_ExpiresIn{ExpiresIn: 3600},
		Scopes:       []string{"openid", "profile", "email"},
		Subject:      "bench-user",
		ClientId:     "bench-client",
	})
	if err != nil {
		return 0, fmt.Errorf("StoreUpstreamTokens: %w", err)
	}
	return res.GetGeneration(), nil
}

// watch runs stream i until it ends.
func (b *watchBench) watch(i int) {
	stream, err := b.streams[i%len(b.streams)].WatchToken(b.ctx, b.req)
	if err != nil {
		b.ended1(i, err)
		return
	}
	m := new(pb.WatchTokenResponse) // reused: RecvMsg resets it
	for {
		err := stream.RecvMsg(m)
		now := time.Now()
		if err != nil {
			b.ended1(i, err)
			return
		}
		b.received(i, m, now)
	}
}

func (b *watchBench) received(i int, m *pb.WatchTokenResponse, now time.Time) {
	g := m.GetCredential().GetGeneration()
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.GetReason() == pb.RenewalReason_RENEWAL_REASON_INITIAL {
		b.lastGen[i] = g
		if b.messageBytes == 0 {
			b.messageBytes = proto.Size(m)
		}
		if !b.opened[i] {
			b.opened[i] = true
			b.openedCount++
			b.settled++
			b.settledCond.Broadcast()
		}
		return
	}
	if g > b.lastGen[i]+1 {
		b.skipped[i] = true
	}
	b.lastGen[i] = g
	if p := b.pending[g]; p != nil && math.IsNaN(p.lat[i]) {
		p.lat[i] = float64(now.Sub(p.t0)) / float64(time.Millisecond)
		p.got++
		p.check()
	}
}

// ended1 records how stream i ended.
func (b *watchBench) ended1(i int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended[i] {
		return
	}
	b.ended[i] = true
	var key string
	if errors.Is(err, io.EOF) {
		// Status OK: the server ended it on its own.
		key = "ended without status"
	} else {
		st := status.Convert(err)
		if b.cancelling && st.Code() == codes.Canceled {
			return
		}
		key = codeName(st.Code()) + ": " + st.Message()
	}
	if !b.cancelling {
		b.errors[key]++
	}
	// One that ends before it opened still lets the ramp go on.
	if !b.opened[i] {
		b.settled++
		b.settledCond.Broadcast()
	}
	// One that ends mid-renewal is no longer expected.
	for _, p := range b.pending {
		if math.IsNaN(p.lat[i]) {
			p.expected--
			p.check()
		}
	}
}

func (b *watchBench) errorsCopy() map[string]int {
	out := make(map[string]int, len(b.errors))
	for k, v := range b.errors {
		out[k] = v
	}
	return out
}

func (b *watchBench) open() (openReply, error) {
	latest, err := b.store(1)
	if err != nil {
		return openReply{}, err
	}
	b.latest = latest
	n := b.s.Streams
	start := time.Now()
	for from := 0; from < n; from += b.s.Batch {
		to := min(n, from+b.s.Batch)
		for i := from; i < to; i++ {
			go b.watch(i)
		}
		b.mu.Lock()
		for b.settled < to {
			b.settledCond.Wait()
		}
		b.mu.Unlock()
	}
	rampMs := float64(time.Since(start)) / float64(time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	return openReply{
		Reply:        "open",
		Opened:       b.openedCount,
		Failed:       n - b.openedCount,
		RampMs:       rampMs,
		MessageBytes: b.messageBytes,
		Errors:       b.errorsCopy(),
	}, nil
}

// cpuMs is this process's user+system CPU time so far.
func cpuMs() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

func (b *watchBench) renew(count int) (renewReply, error) {
	cpu0 := cpuMs()
	n := b.s.Streams
	var alive []int
	b.mu.Lock()
	for i := range n {
		if b.opened[i] && !b.ended[i] {
			alive = append(alive, i)
		}
	}
	clear(b.skipped)
	b.mu.Unlock()
	renewals := make([]renewalResult, 0, count)
	gens := make([]*pending, 0, count)
	for range count {
		generation := b.latest + 1
		p := &pending{lat: make([]float64, n), done: make(chan struct{})}
		for i := range p.lat {
			p.lat[i] = math.NaN()
		}
		b.mu.Lock()
		for _, i := range alive {
			if !b.ended[i] {
				p.expected++
			}
		}
		p.check()
		p.t0 = time.Now()
		b.pending[generation] = p
		b.mu.Unlock()
		stored, err := b.store(generation)
		if err != nil {
			return renewReply{}, err
		}
		ackMs := float64(time.Since(p.t0)) / float64(time.Millisecond)
		b.latest = stored
		if stored != generation {
			return renewReply{}, fmt.Errorf("stored generation %d, expected %d", stored, generation)
		}
		timeout := time.NewTimer(time.Duration(b.s.DeliveryTimeoutMs * float64(time.Millisecond)))
		select {
		case <-p.done:
		case <-timeout.C:
		}
		timeout.Stop()
		b.mu.Lock()
		delete(b.pending, generation)
		latencies := make([]float64, 0, p.got)
		for _, x := range p.lat {
			if !math.IsNaN(x) {
				latencies = append(latencies, x)
			}
		}
		renewals = append(renewals, renewalResult{generation, p.got, latencies, ackMs})
		b.mu.Unlock()
		gens = append(gens, p)
		// Let the server settle (GC, socket buffers) so renewals are independent.
		time.Sleep(time.Duration(b.s.PauseMs * float64(time.Millisecond)))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	gotEvery, skipped := 0, 0
	for _, i := range alive {
		every := true
		for _, p := range gens {
			every = every && !math.IsNaN(p.lat[i])
		}
		if every {
			gotEvery++
		}
	}
	for _, s := range b.skipped {
		if s {
			skipped++
		}
	}
	return renewReply{
		Reply:       "renew",
		Renewals:    renewals,
		GotEvery:    gotEvery,
		Skipped:     skipped,
		Errors:      b.errorsCopy(),
		ClientCPUMs: cpuMs() - cpu0,
	}, nil
}

func (b *watchBench) close() closeReply {
	b.mu.Lock()
	b.cancelling = true
	b.mu.Unlock()
	b.cancel()
	// Let the cancellations reach the server before the connections go.
	time.Sleep(500 * time.Millisecond)
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return closeReply{Reply: "close", Errors: b.errorsCopy()}
}

func runWatch(args []string) error {
	flags := flag.NewFlagSet("watch", flag.ContinueOnError)
	cpuProfile := flags.String("cpuprofile", "", "write a CPU profile (pprof) to this file")
	if err := flags.Parse(args); err != nil {
		return err
	}
	var s watchSettings
	if err := json.Unmarshal([]byte(os.Getenv("BENCH_WATCH_CLIENT")), &s); err != nil {
		return fmt.Errorf("$BENCH_WATCH_CLIENT: %w", err)
	}
	if s.Streams <= 0 || s.Channels <= 0 || s.Batch <= 0 || s.TokenChars <= 0 {
		return errors.New("$BENCH_WATCH_CLIENT: streams, channels, batch and tokenChars must be > 0")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	b, err := newWatchBench(s)
	if err != nil {
		return err
	}
	gc := fmt.Sprintf("GOGC %s, GOMEMLIMIT %s", os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT"))
	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(defaultMemoryLimit)
		gc = fmt.Sprintf("GC off below %d GiB", defaultMemoryLimit>>30)
	}
	connWindow, streamWindow := windows(s)
	out := json.NewEncoder(os.Stdout)
	ready := map[string]string{"reply": "ready", "client": fmt.Sprintf(
		"grpc-go %s, receive windows %d B connection, %d B stream, %s",
		grpc.Version, connWindow, streamWindow, gc)}
	if err := out.Encode(ready); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	// Runs one command at a time; ends when bench/watch.ts closes stdin (after "close").
	for in.Scan() {
		var c watchCommand
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			return fmt.Errorf("command %q: %w", in.Text(), err)
		}
		var reply any
		switch c.Cmd {
		case "open":
			reply, err = b.open()
		case "renew":
			reply, err = b.renew(c.Count)
		case "close":
			reply = b.close()
		default:
			err = fmt.Errorf("unknown command %q", c.Cmd)
		}
		if err != nil {
			return err
		}
		if err := out.Encode(reply); err != nil {
			return err
		}
	}
	return in.Err()
}
