package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "tokenvend/tools/goclient/gen/tokenvend/v1"
)

// What test/go-client.test.ts asserts: plain values, so the test compares exactly.

type credentialOut struct {
	AccessToken string   `json:"access_token"`
	IDToken     string   `json:"id_token"`
	TokenType   string   `json:"token_type"`
	Scopes      []string `json:"scopes"`
	Generation  int64    `json:"generation"`
	ExpiresAtMs int64    `json:"expires_at_ms"`
}

type violationOut struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

type errorOut struct {
	Code       string         `json:"code"`
	Reason     string         `json:"reason"`
	Domain     string         `json:"domain"`
	Violations []violationOut `json:"violations,omitempty"`
}

type watchOut struct {
	Reason      string `json:"reason"`
	AccessToken string `json:"access_token"`
	Generation  int64  `json:"generation"`
}

type callsOut struct {
	StoredGeneration   int64         `json:"stored_generation"`
	Valid              credentialOut `json:"valid"`
	Grant              credentialOut `json:"grant"`
	NotFound           errorOut      `json:"not_found"`
	WrongSubject       errorOut      `json:"wrong_subject"`
	MissingAccessToken errorOut      `json:"missing_access_token"`
	Watch              []watchOut    `json:"watch"`
	RestoredGeneration int64         `json:"restored_generation"`
	WatchEnd           string        `json:"watch_end"`
}

func credential(c *pb.Credential) credentialOut {
	return credentialOut{
		AccessToken: c.GetAccessToken(),
		IDToken:     c.GetIdToken(),
		TokenType:   c.GetTokenType(),
		Scopes:      c.GetScopes(),
		Generation:  c.GetGeneration(),
		ExpiresAtMs: c.GetExpiresAt().AsTime().UnixMilli(),
	}
}

// rpcError reads the status and its google.rpc details the way a Go caller does:
// status.FromError, then Details() decoded by genproto's errdetails types.
func rpcError(err error) (errorOut, error) {
	if err == nil {
		return errorOut{}, errors.New("the call succeeded; an error was expected")
	}
	st, ok := status.FromError(err)
	if !ok {
		return errorOut{}, fmt.Errorf("not a gRPC status: %w", err)
	}
	out := errorOut{Code: codeName(st.Code())}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			out.Reason, out.Domain = d.GetReason(), d.GetDomain()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				out.Violations = append(out.Violations, violationOut{v.GetField(), v.GetDescription()})
			}
		case error:
			return errorOut{}, fmt.Errorf("undecodable status detail: %w", d)
		}
	}
	return out, nil
}

func storeRequest(accessToken string) *pb.StoreUpstreamTokensRequest {
	return &pb.StoreUpstreamTokensRequest{
		SessionId:    "go-session",
		Provider:     "idp",
		AccessToken:  accessToken,
		RefreshToken: "go-rt",
		IdToken:      "go-id",
		Expiry:       &pb.StoreUpstreamTokensRequest_ExpiresIn{ExpiresIn: 300},
		Scopes:       []string{"openid", "api:read"},
		Subject:      "carol",
		ClientId:     "go-client",
	}
}

func runCalls(address string) error {
	opts, err := dialOptions()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(address, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewTokenServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out callsOut

	stored, err := client.StoreUpstreamTokens(ctx, storeRequest("go-at-1"))
	if err != nil {
		return fmt.Errorf("StoreUpstreamTokens: %w", err)
	}
	out.StoredGeneration = stored.GetGeneration()

	valid, err := client.GetValidTokens(ctx, &pb.GetValidTokensRequest{
		SessionId: "go-session", Provider: "idp", ExpectedSubject: "carol", ExpectedClientId: "go-client",
	})
	if err != nil {
		return fmt.Errorf("GetValidTokens: %w", err)
	}
	out.Valid = credential(valid.GetCredential())

	grant, err := client.GetToken(ctx, &pb.GetTokenRequest{Grant: "demo"})
	if err != nil {
		return fmt.Errorf("GetToken: %w", err)
	}
	out.Grant = credential(grant.GetCredential())

	_, err = client.GetValidTokens(ctx, &pb.GetValidTokensRequest{SessionId: "nobody", Provider: "idp"})
	if out.NotFound, err = rpcError(err); err != nil {
		return fmt.Errorf("GetValidTokens of an unknown session: %w", err)
	}
	_, err = client.GetValidTokens(ctx, &pb.GetValidTokensRequest{
		SessionId: "go-session", Provider: "idp", ExpectedSubject: "mallory",
	})
	if out.WrongSubject, err = rpcError(err); err != nil {
		return fmt.Errorf("GetValidTokens with another subject: %w", err)
	}
	_, err = client.StoreUpstreamTokens(ctx, storeRequest(""))
	if out.MissingAccessToken, err = rpcError(err); err != nil {
		return fmt.Errorf("StoreUpstreamTokens without an access token: %w", err)
	}

	// The stream: the current token first, then the renewal our own store causes.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	stream, err := client.WatchToken(watchCtx, &pb.WatchTokenRequest{
		Target: &pb.WatchTokenRequest_Session{Session: &pb.SessionTarget{SessionId: "go-session", Provider: "idp"}},
	})
	if err != nil {
		return fmt.Errorf("WatchToken: %w", err)
	}
	recv := func() error {
		m, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("WatchToken message %d: %w", len(out.Watch)+1, err)
		}
		out.Watch = append(out.Watch, watchOut{
			Reason:      m.GetReason().String(),
			AccessToken: m.GetCredential().GetAccessToken(),
			Generation:  m.GetCredential().GetGeneration(),
		})
		return nil
	}
	if err := recv(); err != nil {
		return err
	}
	restored, err := client.StoreUpstreamTokens(ctx, storeRequest("go-at-2"))
	if err != nil {
		return fmt.Errorf("StoreUpstreamTokens (second): %w", err)
	}
	out.RestoredGeneration = restored.GetGeneration()
	if err := recv(); err != nil {
		return err
	}
	stopWatch()
	_, err = stream.Recv()
	out.WatchEnd = codeName(status.Code(err))

	return json.NewEncoder(os.Stdout).Encode(out)
}
