package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// How the client proves who it is, from the environment, as a deployed caller would:
//
//	TOKENVEND_AUTHORIZATION   sent as the authorization metadata of every call
//	                          ("Bearer <service-account token or API key>")
//	TOKENVEND_CA_FILE         TLS: the CA the server's certificate chains to
//	TOKENVEND_CERT_FILE,      mTLS: the client certificate and its key
//	TOKENVEND_KEY_FILE
//
// Without them: plaintext and no credentials.
func dialOptions() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if ca := os.Getenv("TOKENVEND_CA_FILE"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no certificate", ca)
		}
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert := os.Getenv("TOKENVEND_CERT_FILE"); cert != "" {
			pair, err := tls.LoadX509KeyPair(cert, os.Getenv("TOKENVEND_KEY_FILE"))
			if err != nil {
				return nil, err
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if auth := os.Getenv("TOKENVEND_AUTHORIZATION"); auth != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(authorization(auth)))
	}
	return opts, nil
}

// authorization is per-call metadata; the tests also send it over plaintext on loopback.
type authorization string

func (a authorization) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(a)}, nil
}

func (authorization) RequireTransportSecurity() bool { return false }
